"""Estimators: a built-in kind or any scikit-learn-compatible class named by import path, built for a
task, and the types a saved model of it may hold.

A model is saved with skops (MLflow's ``serialization_format="skops"``) and loaded by the mesh with
*its own* list of trusted types, never the list a model file carries: loading runs no code outside
scikit-learn, numpy, scipy, the families reviewed below and the estimator classes the configuration
names (under version control, so reviewed with it).
"""

from __future__ import annotations

import importlib
import inspect
import threading
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.ml.tasks import is_classification

# scikit-learn and skops are imported where a model is built, checked or saved, not at the top: the
# configuration here is read by every service, most of which never hold a model.

BuiltinKind = Literal[
    "logistic_regression", "linear", "hist_gradient_boosting", "random_forest", "lightgbm", "xgboost"
]

# kind -> (classifier, regressor) import paths; None: the kind has no such estimator.
BUILTIN_CLASSES: dict[str, tuple[str | None, str | None]] = {
    "logistic_regression": ("sklearn.linear_model.LogisticRegression", None),
    "linear": ("sklearn.linear_model.LogisticRegression", "sklearn.linear_model.Ridge"),
    "hist_gradient_boosting": (
        "sklearn.ensemble.HistGradientBoostingClassifier",
        "sklearn.ensemble.HistGradientBoostingRegressor",
    ),
    "random_forest": ("sklearn.ensemble.RandomForestClassifier", "sklearn.ensemble.RandomForestRegressor"),
    "lightgbm": ("lightgbm.LGBMClassifier", "lightgbm.LGBMRegressor"),
    "xgboost": ("xgboost.XGBClassifier", "xgboost.XGBRegressor"),
}
# Linear models learn badly from unscaled inputs: their kinds standardise first unless told otherwise.
SCALED_KINDS = ("logistic_regression", "linear")

# Types beyond skops' defaults that a saved model may hold, reviewed one by one. Each is plain data
# (arrays, dicts, the native boosters' own serialised bytes) restored without running model code.
REVIEWED_TYPES = (
    "shared.ml.steps.FeatureTransformer",  # ours: carries the feature spec and fitted state as plain data
    "shared.ml.steps.EncodedLabels",  # ours: an estimator and the label encoder's classes
    # The same two, as models saved before they moved to shared.ml.steps name them.
    "shared.ml.features.FeatureTransformer",
    "shared.ml.estimators.EncodedLabels",
    # Trees: their node arrays hold child and feature indices that scikit-learn follows without bounds checks
    # (a crafted file could make inference read out of bounds; skops 0.16 stopped trusting Tree for that).
    # The mesh loads them only through modeling.load_logged_model, which checks every index (tree_problems).
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
    "collections.OrderedDict",  # LightGBM keeps its parameters in one
    "lightgbm.basic.Booster",  # restored from its model string
    "lightgbm.sklearn.LGBMClassifier",
    "lightgbm.sklearn.LGBMRegressor",
    "xgboost.core.Booster",  # restored from its raw UBJSON bytes
    "xgboost.sklearn.XGBClassifier",
    "xgboost.sklearn.XGBRegressor",
)
# CPython before 3.11.8 and 3.12.2 (this machine runs 3.11.7) shares one AST-constructor recursion counter
# between threads (python/cpython#106905). skops restores arrays with np.load, which parses each header
# with ast.literal_eval, so two threads reading or writing models at once (serving loading several, the
# registry's gate, trainings side by side) can fail with "SystemError: AST constructor recursion depth
# mismatch". Every skops read or write in the mesh holds this lock; they are CPU-bound under the GIL anyway.
SKOPS_FILES = threading.Lock()

# Families whose classifiers only learn integer labels 0..k-1: the mesh encodes labels for them.
ENCODED_LABEL_MODULES = ("xgboost",)


class EstimatorConfig(BaseModel):
    """``kind`` (a built-in) or ``class`` (an import path), with constructor ``params``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    kind: BuiltinKind | None = None
    class_path: str | None = Field(default=None, alias="class", pattern=r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+$")
    params: dict[str, Any] = Field(default_factory=dict)
    scale: bool | None = Field(default=None, description="standardise inputs first (default: linear kinds)")

    @model_validator(mode="after")
    def _one_of_kind_or_class(self) -> EstimatorConfig:
        if (self.kind is None) == (self.class_path is None):
            raise ValueError("give exactly one of kind (a built-in) or class (an import path)")
        return self

    @property
    def name(self) -> str:
        return self.kind or str(self.class_path)

    def resolved_path(self, task: str) -> str:
        """The import path of the class this configuration builds for ``task``."""
        if self.class_path is not None:
            return self.class_path
        classifier, regressor = BUILTIN_CLASSES[str(self.kind)]
        path = classifier if is_classification(task) else regressor
        if path is None:
            raise ValueError(f"kind {self.kind} has no estimator for a {task} task")
        return path

    @property
    def scaled(self) -> bool:
        return self.scale if self.scale is not None else self.kind in SCALED_KINDS


def import_class(path: str) -> type:
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r}: {exc}") from None
    found = getattr(module, attr, None)
    if not inspect.isclass(found):
        raise ValueError(f"{module_name!r} has no class {attr!r}")
    return found


def estimator_problems(config: EstimatorConfig, task: str) -> list[tuple[str, str]]:
    """What is wrong with ``config`` for ``task``, as (field, message) pairs; empty when it can be built."""
    try:
        path = config.resolved_path(task)
        cls = import_class(path)
    except ValueError as exc:
        return [("estimator.kind" if config.kind else "estimator.class", str(exc))]
    where = "estimator.class" if config.class_path else "estimator.kind"
    try:
        instance = cls(**config.params)
    except TypeError as exc:
        return [("estimator.params", f"{path} does not take these params: {exc}")]
    from sklearn.base import is_classifier, is_regressor

    if not hasattr(instance, "fit") or not hasattr(instance, "get_params"):
        return [(where, f"{path} is not a scikit-learn-compatible estimator (no fit/get_params)")]
    if is_classification(task):
        if not is_classifier(instance) or not hasattr(instance, "predict_proba"):
            return [(where, f"{path} is not a classifier with predict_proba; a {task} task needs one")]
    elif not is_regressor(instance):
        return [(where, f"{path} is not a regressor; a regression task needs one")]
    return []


def build_estimator(config: EstimatorConfig, task: str, seed: int) -> Any:
    """An unfitted estimator for ``task``: the class with its params, the mesh's defaults where the class
    takes them (seed, one native thread) and never over what the configuration says."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from shared.ml.steps import EncodedLabels

    path = config.resolved_path(task)
    cls = import_class(path)
    accepted = inspect.signature(cls).parameters
    defaults: dict[str, Any] = {"random_state": seed, "n_jobs": 1, "max_iter": 1000}
    if path.startswith("lightgbm."):
        defaults |= {"verbose": -1, "deterministic": True, "force_row_wise": True}
    if path.startswith("sklearn.ensemble.HistGradientBoosting") or not path.startswith("sklearn."):
        defaults.pop("max_iter")  # HGB's max_iter is its number of trees, not a solver's iteration cap
    if path.startswith("sklearn.linear_model."):
        defaults.pop("n_jobs")  # no effect on one model, and deprecated on LogisticRegression
    params = {k: v for k, v in defaults.items() if k in accepted} | dict(config.params)
    estimator = cls(**params)
    if is_classification(task) and path.split(".")[0] in ENCODED_LABEL_MODULES:
        estimator = EncodedLabels(estimator)
    return make_pipeline(StandardScaler(), estimator) if config.scaled else estimator


def trusted_types(config: EstimatorConfig, task: str) -> list[str]:
    """The types a model built from ``config`` may hold when loaded: the reviewed ones and its class."""
    try:
        path = config.resolved_path(task)
        cls = import_class(path)
    except ValueError:
        return list(REVIEWED_TYPES)
    return sorted({*REVIEWED_TYPES, f"{cls.__module__}.{cls.__qualname__}"})


def _tree_problems(tree: Any, n_features: int) -> list[str]:
    """A scikit-learn Tree's node arrays: each node a leaf (children -1) or split on a feature
    of the input into two later nodes; every node but the root the child of exactly one; no path deeper
    than ``max_depth`` (decision_path allocates by it)."""
    n = int(tree.node_count)
    left, right, feature = tree.children_left, tree.children_right, tree.feature
    if n < 1 or not (len(left) == len(right) == len(feature) == n):
        return [f"{n} nodes but arrays of {len(left)}, {len(right)} and {len(feature)}"]
    return _node_problems(
        left, right, left_leaf=left == -1, right_leaf=right == -1, feature=feature, n_features=n_features,
        max_depth=int(tree.max_depth),
    )  # fmt: skip


def _predictor_problems(predictor: Any, n_features: int) -> list[str]:
    """A HistGradientBoosting TreePredictor's nodes, as a Tree's, and each categorical split's bitset."""
    nodes = predictor.nodes
    leaf = nodes["is_leaf"].astype(bool)
    problems = _node_problems(
        nodes["left"], nodes["right"], left_leaf=leaf, right_leaf=leaf, feature=nodes["feature_idx"],
        n_features=n_features, max_depth=None,
    )  # fmt: skip
    categorical = ~leaf & nodes["is_categorical"].astype(bool)
    if (nodes["bitset_idx"][categorical] >= len(predictor.raw_left_cat_bitsets)).any():
        problems.append("a categorical split names a bitset it does not hold")
    return problems


def _node_problems(
    left: np.ndarray,
    right: np.ndarray,
    *,
    left_leaf: np.ndarray,
    right_leaf: np.ndarray,
    feature: np.ndarray,
    n_features: int,
    max_depth: int | None,
) -> list[str]:
    """Problems of node arrays where a node is a leaf or splits on ``feature`` into ``left``/``right``."""
    n = len(left)
    index = np.arange(n)
    problems = []
    if (left_leaf != right_leaf).any():
        problems.append("a node has one child")
    split = ~left_leaf
    inside = (left > index) & (left < n) & (right > index) & (right < n)
    if not inside[split].all():
        problems.append("a split's child index is not a later node of the tree")
        return problems  # the checks below would index out of bounds themselves
    if not ((feature[split] >= 0) & (feature[split] < n_features)).all():
        problems.append(f"a split's feature index is outside the {n_features} input features")
    parents = np.bincount(np.concatenate([left[split], right[split]]), minlength=n)
    if parents[0] != 0 or (parents[1:] != 1).any():
        problems.append("the nodes do not form one tree (a node with no parent or two)")
    elif max_depth is not None:
        depth, frontier = 0, np.array([0])
        while len(frontier := frontier[split[frontier]]):
            frontier, depth = np.concatenate([left[frontier], right[frontier]]), depth + 1
        if depth > max_depth:
            problems.append(f"a path {depth} deep in a tree declaring max_depth {max_depth}")
    return problems


def tree_problems(model: Any) -> list[str]:
    """What is wrong with the trees inside ``model`` (any nesting: pipelines, ensembles, wrappers), each
    checked against the input width of the estimator holding it."""
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.tree._tree import Tree

    problems: list[str] = []
    seen: set[int] = set()

    def visit(value: Any, n_features: int, where: str) -> None:
        if id(value) in seen or isinstance(value, str | bytes | int | float):
            return
        seen.add(id(value))
        if isinstance(value, np.ndarray):
            if value.dtype == object:  # GradientBoosting keeps its trees in one
                visit(value.ravel().tolist(), n_features, where)
        elif isinstance(value, Tree):
            problems.extend(f"{where}: {p}" for p in _tree_problems(value, n_features))
        elif isinstance(value, TreePredictor):
            problems.extend(f"{where}: {p}" for p in _predictor_problems(value, n_features))
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                visit(item, n_features, f"{where}[{i}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(item, n_features, f"{where}[{key!r}]")
        elif hasattr(value, "__dict__") and type(value).__module__.split(".")[0] in ("sklearn", "shared"):
            width = int(getattr(value, "n_features_in_", n_features))
            for name, item in vars(value).items():
                visit(item, width, f"{where}.{name}")

    visit(model, 2**31, type(model).__name__)
    return problems


class UnreviewedTypes(ValueError):
    """A fitted model holding types nobody reviewed: it could not be loaded without trusting them."""


def require_reviewed(model: Any, config: EstimatorConfig, task: str) -> None:
    """Raises UnreviewedTypes naming what ``model`` holds beyond the trusted types of ``config``."""
    import skops.io

    with SKOPS_FILES:
        found = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    unreviewed = sorted(set(found) - set(trusted_types(config, task)))
    if unreviewed:
        raise UnreviewedTypes(
            f"the fitted {config.name} holds types the mesh has not reviewed for loading: "
            f"{', '.join(unreviewed)} (after review, add them to REVIEWED_TYPES in shared/ml/estimators.py)"
        )


def __getattr__(name: str) -> Any:
    # Models saved before the scikit-learn steps moved to shared.ml.steps name EncodedLabels here.
    if name == "EncodedLabels":
        from shared.ml.steps import EncodedLabels

        return EncodedLabels
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
