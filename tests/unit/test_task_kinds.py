"""Task kinds and estimators, without services: each task's metrics and answers, estimators named by kind or
import path for each task, labels of any type, the types a saved model may hold, and training data that
cannot make a model of its task refused in words a person can act on."""

from __future__ import annotations

import json
import math
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import polars as pl
import pytest
from sklearn import datasets as sk_datasets
from sklearn.ensemble import RandomForestClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline

from shared.ml.estimators import (
    BUILTIN_CLASSES,
    SKOPS_FILES,
    EstimatorConfig,
    UnreviewedTypes,
    build_estimator,
    estimator_problems,
    require_reviewed,
    tree_problems,
    trusted_types,
)
from shared.ml.modeling import (
    ModelConfig,
    TrainingDataError,
    load_logged_model,
    make_estimator,
    model_requirements,
    training_data_problems,
)
from shared.ml.steps import EncodedLabels, FeatureTransformer
from shared.ml.tasks import (
    METRICS,
    Outputs,
    infer_task,
    live_metric,
    output_profile,
    predict_outputs,
    score,
    worsening,
)


def _wine() -> tuple[np.ndarray, np.ndarray]:
    X, y = sk_datasets.load_wine(return_X_y=True)
    return X, np.array(["barolo", "grignolino", "barbera"])[y]


def _config(task: str, estimator: dict[str, Any]) -> ModelConfig:
    return ModelConfig.model_validate(
        {"model_name": "m", "dataset": "d", "task": task, "estimator": estimator}
    )


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([0, 1, 1, 0], "binary"),
        (["yes", "no", "yes"], "binary"),
        ([True, False, True], "binary"),
        (["a", "b", "c", "a"], "multiclass"),
        ([1, 2, 3, 2, 1], "multiclass"),
        ([0.5, 1.25, 3.0, 2.0], "regression"),
        (list(range(50)), "regression"),
    ],
)
def test_the_task_is_inferred_from_the_target(values: list[Any], task: str) -> None:
    assert infer_task(pl.Series(values)) == task


@pytest.mark.parametrize(
    ("kind", "task"),
    [
        ("xgboost", "multiclass"),
        ("lightgbm", "multiclass"),
        ("hist_gradient_boosting", "multiclass"),
        ("random_forest", "binary"),
        ("linear", "multiclass"),
    ],
)
def test_every_family_learns_string_labels_and_answers_in_them(kind: str, task: str) -> None:
    X, y = _wine()
    if task == "binary":
        y = np.where(y == "barolo", "barolo", "other")
    params = {"max_iter": 20} if kind.startswith("hist") else {} if kind == "linear" else {"n_estimators": 20}
    config = _config(task, {"kind": kind, "params": params})
    model = make_estimator(config).fit(X, y)
    outputs = predict_outputs(model, X, task)
    assert set(outputs.predictions) <= set(y)
    assert outputs.classes == sorted(set(y.tolist()))
    assert np.allclose(outputs.probabilities.sum(axis=1), 1.0)  # type: ignore[union-attr]
    # The label is the class of highest probability, and what the model's own predict says.
    assert list(outputs.predictions) == list(model.predict(X))
    metrics = score(y, outputs)
    assert set(metrics) == set(METRICS[task])
    assert metrics["accuracy"] > 0.9


def test_xgboost_classifiers_are_taught_encoded_labels_and_answer_with_the_real_ones() -> None:
    X, y = _wine()
    model = build_estimator(EstimatorConfig(kind="xgboost", params={"n_estimators": 10}), "multiclass", 0)
    assert isinstance(model, EncodedLabels)
    model.fit(X, y)
    assert list(model.classes_) == ["barbera", "barolo", "grignolino"]
    assert set(model.predict(X)) == set(y)


@pytest.mark.parametrize(
    "estimator",
    [
        {"kind": "lightgbm", "params": {"n_estimators": 50}},
        {"kind": "xgboost", "params": {"n_estimators": 50}},
        {"kind": "linear"},
        {"class": "sklearn.linear_model.Ridge", "params": {"alpha": 0.5}, "scale": True},
        {"class": "sklearn.ensemble.ExtraTreesRegressor", "params": {"n_estimators": 20}},
    ],
)
def test_regressors_of_every_family(estimator: dict[str, Any]) -> None:
    X, y = sk_datasets.load_diabetes(return_X_y=True)
    config = _config("regression", estimator)
    model = make_estimator(config).fit(X, y)
    outputs = predict_outputs(model, X, "regression")
    assert outputs.probabilities is None and outputs.classes is None
    metrics = score(y, outputs)
    assert set(metrics) == {"rmse", "mae", "r2"} and metrics["r2"] > 0.3
    assert outputs.answer(0) == {"prediction": pytest.approx(float(outputs.predictions[0]))}


def test_the_mesh_defaults_never_override_the_configured_params() -> None:
    config = EstimatorConfig(kind="random_forest", params={"random_state": 7, "n_jobs": 2})
    params = build_estimator(config, "binary", seed=42).get_params()
    assert (params["random_state"], params["n_jobs"]) == (7, 2)
    assert (
        build_estimator(EstimatorConfig(kind="random_forest"), "binary", seed=42).get_params()["n_jobs"] == 1
    )


def test_answers_per_task_kind() -> None:
    binary = Outputs("binary", np.array(["no", "yes"]), np.array([[0.8, 0.2], [0.3, 0.7]]), ["no", "yes"])
    assert binary.answer(1) == {
        "prediction": "yes",
        "probability": 0.7,
        "probabilities": {"no": 0.3, "yes": 0.7},
    }
    multi = Outputs("multiclass", np.array([2]), np.array([[0.1, 0.2, 0.7]]), [0, 1, 2])
    assert multi.answer(0) == {"prediction": 2, "probabilities": {"0": 0.1, "1": 0.2, "2": 0.7}}
    assert Outputs("regression", np.array([3.5])).answer(0) == {"prediction": 3.5}


def test_metrics_know_their_direction() -> None:
    assert worsening("regression", "rmse", before=10.0, now=12.0) == 2.0
    assert worsening("multiclass", "macro_f1", before=0.9, now=0.8) == pytest.approx(0.1)
    assert worsening("regression", "r2", before=0.5, now=0.6) == pytest.approx(-0.1)


def test_live_metrics_compare_labels_as_they_arrive() -> None:
    # Labels come as JSON: 1 or "1" are the same class to the monitor.
    labels, predicted = pl.Series([1, 0, 1, 1]), pl.Series(["1", "0", "0", "1"])
    assert live_metric("binary", "accuracy", labels, predicted) == 0.75
    assert live_metric("multiclass", "macro_f1", pl.Series(["a", "b"]), pl.Series(["a", "b"])) == 1.0
    rmse = live_metric("regression", "rmse", pl.Series([1.0, 3.0]), pl.Series([2.0, 2.0]))
    assert rmse == pytest.approx(1.0)


def test_output_profiles_per_task() -> None:
    binary = Outputs("binary", np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]]), [0, 1])
    assert output_profile(binary)["kind"] == "numeric"
    multi = Outputs("multiclass", np.array(["a", "c", "c"]), np.full((3, 3), 1 / 3), ["a", "b", "c"])
    profile = output_profile(multi)
    assert profile["kind"] == "categorical"
    assert profile["shares"] == pytest.approx({"a": 1 / 3, "b": 0.0, "c": 2 / 3})
    assert output_profile(Outputs("regression", np.array([1.0, 2.0, 4.0])))["kind"] == "numeric"


@pytest.mark.parametrize(
    ("estimator", "task", "field", "message"),
    [
        (
            {"class": "sklearn.linear_model.Ridge"},
            "binary",
            "estimator.class",
            "not a classifier with predict_proba",
        ),
        (
            {"class": "sklearn.svm.LinearSVC"},
            "binary",
            "estimator.class",
            "not a classifier with predict_proba",
        ),
        (
            {"class": "sklearn.linear_model.LogisticRegression"},
            "regression",
            "estimator.class",
            "not a regressor",
        ),
        ({"class": "sklearn.linear_model.Nope"}, "binary", "estimator.class", "has no class 'Nope'"),
        ({"class": "nowhere.Model"}, "binary", "estimator.class", "cannot import module 'nowhere'"),
        (
            {"kind": "logistic_regression"},
            "regression",
            "estimator.kind",
            "no estimator for a regression task",
        ),
        ({"kind": "xgboost", "params": {"bogus": 1}}, "binary", "estimator.params", None),
        (
            {"class": "sklearn.linear_model.Ridge", "params": {"nope": 1}},
            "regression",
            "estimator.params",
            "nope",
        ),
    ],
)
def test_an_estimator_that_cannot_serve_the_task_is_named(
    estimator: dict[str, Any], task: str, field: str, message: str | None
) -> None:
    problems = estimator_problems(EstimatorConfig.model_validate(estimator), task)
    if estimator.get("kind") == "xgboost":  # XGBoost takes any keyword (it warns at fit): nothing to say
        assert problems == []
        return
    assert len(problems) == 1 and problems[0][0] == field
    assert message in problems[0][1]


def test_kind_or_class_exactly_one() -> None:
    with pytest.raises(ValueError, match="exactly one of kind"):
        EstimatorConfig.model_validate({"kind": "linear", "class": "sklearn.linear_model.Ridge"})
    with pytest.raises(ValueError, match="exactly one of kind"):
        EstimatorConfig.model_validate({"params": {}})


TREE_CLASSES = (
    "sklearn.tree.DecisionTreeClassifier",
    "sklearn.ensemble.ExtraTreesClassifier",
    "sklearn.ensemble.GradientBoostingClassifier",
)
SAVED = [
    *((kind, task) for kind, (classifier, regressor) in BUILTIN_CLASSES.items() for task, path in
      (("multiclass", classifier), ("regression", regressor)) if path),
    *((f"class:{path}", "multiclass") for path in TREE_CLASSES),
]  # fmt: skip


def _small(kind: str) -> dict[str, Any]:
    """An estimator config quick to fit: a few trees or iterations."""
    if kind.startswith("class:"):
        path = kind.removeprefix("class:")
        return {"class": path, "params": {} if "DecisionTree" in path else {"n_estimators": 5}}
    few = {"hist_gradient_boosting": {"max_iter": 5}, "linear": {}, "logistic_regression": {}}
    return {"kind": kind, "params": few.get(kind, {"n_estimators": 5})}


def _save(model: Any, config: ModelConfig, directory: Path) -> None:
    """As training logs a model: the sklearn flavour, skops, the mesh's trusted types."""
    with SKOPS_FILES:
        mlflow.sklearn.save_model(
            model, directory, serialization_format="skops",
            skops_trusted_types=trusted_types(config.estimator, config.task),
            pip_requirements=model_requirements(config),  # else MLflow infers them in a subprocess
        )  # fmt: skip


@pytest.mark.parametrize(("kind", "task"), SAVED, ids=[f"{kind}-{task}" for kind, task in SAVED])
def test_every_estimator_family_saves_and_loads_as_the_mesh_logs_and_serves_it(
    kind: str, task: str, tmp_path: Path
) -> None:
    """Each built-in kind and task, and the tree classes one may name, holds only reviewed types and
    round-trips through the sklearn flavour with skops, loaded by the mesh's own trusted types and tree
    checks (skops 0.16 stopped trusting scikit-learn's Tree: random_forest models could not be saved)."""
    X, y = _wine()
    if task == "regression":
        y = X[:, 0]
    config = _config(task, _small(kind))
    model = build_estimator(config.estimator, task, 0).fit(X, y)
    require_reviewed(model, config.estimator, task)  # nothing beyond the reviewed types
    _save(model, config, tmp_path / "model")
    loaded = load_logged_model(tmp_path / "model", config)
    assert np.array_equal(loaded.predict(X), model.predict(X))


def _named_as_before_the_move(skops_file: Path) -> None:
    """Rewrite a saved model as the mesh wrote it before its scikit-learn steps moved to shared.ml.steps."""
    old_modules = {"FeatureTransformer": "shared.ml.features", "EncodedLabels": "shared.ml.estimators"}

    def rename(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("__module__") == "shared.ml.steps":
                node["__module__"] = old_modules[node["__class__"]]
            for value in node.values():
                rename(value)
        elif isinstance(node, list):
            for value in node:
                rename(value)

    with zipfile.ZipFile(skops_file) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    schema = json.loads(members["schema.json"])
    rename(schema)
    assert "shared.ml.steps" not in json.dumps(schema)
    members["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(skops_file, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_a_model_saved_before_the_steps_moved_still_loads(tmp_path: Path) -> None:
    """Saved models name the mesh's own steps by import path: those written when the steps lived in
    shared.ml.features and shared.ml.estimators load, as the classes they are now."""
    X, y = _wine()
    config = _config("multiclass", {"kind": "xgboost", "params": {"n_estimators": 5}})
    estimator = build_estimator(config.estimator, "multiclass", 0).fit(X, y)
    model = Pipeline([("features", FeatureTransformer({"spec": "kept as data"})), ("estimator", estimator)])
    _save(model, config, tmp_path / "model")
    _named_as_before_the_move(tmp_path / "model" / "model.skops")
    loaded = load_logged_model(tmp_path / "model", config)
    assert isinstance(loaded.named_steps["features"], FeatureTransformer)
    assert loaded.named_steps["features"].pipeline == {"spec": "kept as data"}
    assert isinstance(loaded.named_steps["estimator"], EncodedLabels)
    assert np.array_equal(loaded.named_steps["estimator"].predict(X), estimator.predict(X))


def _forest_with(edit: Callable[[np.ndarray, dict[str, Any]], None]) -> Any:
    """A fitted random forest whose first tree's node arrays (or state) were edited as a crafted file
    could have them."""
    X, y = _wine()
    forest = RandomForestClassifier(n_estimators=2, random_state=0).fit(X, y)
    cls, args, state = forest.estimators_[0].tree_.__reduce__()
    state = {**state, "nodes": state["nodes"].copy()}
    edit(state["nodes"], state)
    crafted = cls(*args)
    crafted.__setstate__(state)
    forest.estimators_[0].tree_ = crafted
    return forest


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda nodes, state: nodes["left_child"].__setitem__(0, 10**6), "child index is not a later node"),
        (lambda nodes, state: nodes["feature"].__setitem__(0, 13), "feature index is outside the 13 input"),
        (
            lambda nodes, state: nodes["right_child"].__setitem__(0, nodes["left_child"][0]),
            "do not form one tree",
        ),
        (lambda nodes, state: state.__setitem__("max_depth", 1), "deep in a tree declaring max_depth 1"),
    ],
    ids=["child out of bounds", "feature out of bounds", "shared child", "deeper than declared"],
)
def test_a_model_file_with_a_crafted_tree_is_refused_before_inference(
    edit: Callable[[np.ndarray, dict[str, Any]], None], says: str, tmp_path: Path
) -> None:
    """scikit-learn follows a tree's indices without bounds checks: the mesh checks them on load."""
    forest = _forest_with(edit)
    assert any(says in problem for problem in tree_problems(forest))
    config = _config("multiclass", {"kind": "random_forest"})
    _save(forest, config, tmp_path / "model")
    with pytest.raises(ValueError, match=r"holds malformed trees: RandomForestClassifier\.estimators_"):
        load_logged_model(tmp_path / "model", config)


def test_a_gradient_boosting_predictor_with_a_crafted_node_is_named() -> None:
    X, y = _wine()
    model = build_estimator(
        EstimatorConfig(kind="hist_gradient_boosting", params={"max_iter": 3}), "multiclass", 0
    )
    model.fit(X, y)
    assert tree_problems(model) == []
    predictor = model._predictors[1][2]
    predictor.nodes = predictor.nodes.copy()
    predictor.nodes["feature_idx"][0] = 40
    assert tree_problems(model) == [
        "HistGradientBoostingClassifier._predictors[1][2]: a split's feature index is outside the 13 input "
        "features"
    ]


def test_skops_work_waits_for_the_process_wide_lock() -> None:
    """CPython 3.11.7's AST constructor races between threads (python/cpython#106905) and np.load parses
    with it: a model is read or written by one thread at a time."""
    X, y = _wine()
    config = EstimatorConfig(kind="hist_gradient_boosting", params={"max_iter": 5})
    model = build_estimator(config, "multiclass", 0).fit(X, y)
    checked = threading.Thread(target=require_reviewed, args=(model, config, "multiclass"))
    with SKOPS_FILES:
        checked.start()
        checked.join(timeout=0.5)
        assert checked.is_alive()  # still waiting for the lock this test holds
    checked.join(timeout=30)
    assert not checked.is_alive()


def test_a_model_holding_unreviewed_types_is_refused_naming_them() -> None:
    X, y = _wine()
    config = EstimatorConfig.model_validate({"class": "sklearn.neighbors.KNeighborsClassifier"})
    model = KNeighborsClassifier().fit(X, y)
    with pytest.raises(UnreviewedTypes, match=r"sklearn\.neighbors\._kd_tree\.KDTree"):
        require_reviewed(model, config, "multiclass")


@pytest.mark.parametrize(
    ("frame", "task", "message"),
    [
        (pl.DataFrame({"x": [1.0, 2.0], "y": ["a", "a"]}), "binary", "target column 'y' has one class"),
        (pl.DataFrame({"x": [1.0, 2.0, 3.0], "y": ["a", "b", "c"]}), "binary", "a binary task has two"),
        (pl.DataFrame({"x": [1.0, 2.0], "y": ["a", "b"]}), "regression", "a regression task needs numbers"),
        (pl.DataFrame({"x": [1.0, 2.0], "y": [1.0, None]}), "regression", "has 1 missing values"),
    ],
)
def test_training_data_that_cannot_make_the_task_is_refused_naming_the_column(
    frame: pl.DataFrame, task: str, message: str
) -> None:
    problems = training_data_problems(frame, "y", task)
    assert len(problems) == 1 and message in problems[0]


def test_fitting_refuses_unfit_training_data_before_the_estimator_sees_it() -> None:
    from shared.ml.modeling import fit_servable

    config = _config("binary", {"kind": "linear"})
    with pytest.raises(TrainingDataError, match="one class"):
        fit_servable(config, pl.DataFrame({"x": [1.0, 2.0], "y": [1, 1]}), "y", {})


def test_scores_of_a_holdout_with_a_class_the_model_never_saw() -> None:
    outputs = Outputs("multiclass", np.array(["a", "b"]), np.array([[0.9, 0.1], [0.2, 0.8]]), ["a", "b"])
    metrics = score(np.array(["a", "c"]), outputs)
    assert metrics["accuracy"] == 0.5 and math.isnan(metrics["log_loss"])


def test_live_f1_scores_the_positive_class_it_is_given() -> None:
    labels, predicted = pl.Series([10, 2, 10, 2]), pl.Series([10, 10, 10, 2])
    # As text "10" sorts before "2": the default would score class 2; the model's positive class is 10.
    assert live_metric("binary", "f1", labels, predicted, positive="10") == pytest.approx(0.8)
    assert live_metric("binary", "f1", labels, predicted) == pytest.approx(2 / 3)
