"""Models of the mesh: what to train (config), how to build it, and how every service scores it.

A served model is a scikit-learn Pipeline ``[features, estimator]`` taking *raw* records; the features
step carries the fitted feature pipeline (shared.ml.features), so the registry scores a candidate and the
champion on the same raw holdout, each through its own features, and serving needs no feature code of
its own.
"""

from __future__ import annotations

import importlib.metadata
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator
from threadpoolctl import threadpool_limits

from shared.ml.config_files import ConfigProblem, InvalidConfig, read_config
from shared.ml.datasets import DatasetSchema
from shared.ml.estimators import SKOPS_FILES, EstimatorConfig, build_estimator, tree_problems, trusted_types
from shared.ml.tasks import DEFAULT_PRIMARY_METRIC, METRICS, TaskKind, is_classification, predict_outputs

if TYPE_CHECKING:
    from mlflow.models import ModelSignature
    from sklearn.pipeline import Pipeline

# MLflow, scikit-learn and skops are imported where a model is built, described, saved or loaded: a
# model's configuration (ModelConfig, read by every service) needs none of them, and each process that
# only reads it is ~200 MB lighter without them.

# Registry aliases: the version serving, and the one it replaced (what a rollback returns to).
CHAMPION = "champion"
PREVIOUS = "previous"
# A training run's artifact: the distribution of the model's outputs on its holdout, what the monitor
# scores drift of outputs against.
OUTPUT_PROFILE = "monitoring/output_profile.json"

# What a logged model needs installed to load (besides the mesh's own shared/ package, whose feature
# transformer it holds). Given explicitly: otherwise MLflow infers them by loading the model in a
# subprocess, which took most of the time of logging a model (../shared/notes/dependencies.md).
MODEL_REQUIREMENTS = ("scikit-learn", "polars", "numpy", "scipy", "skops", "threadpoolctl")
# Installed packages an estimator class may come from, and what a model of it then needs too.
ESTIMATOR_PACKAGES = {"lightgbm": "lightgbm", "xgboost": "xgboost-cpu"}


def model_requirements(config: ModelConfig) -> list[str]:
    """What a model of ``config`` needs, pinned to the versions installed here (it was fitted with)."""
    names = list(MODEL_REQUIREMENTS)
    root = config.estimator.resolved_path(config.task).split(".")[0]
    if root in ESTIMATOR_PACKAGES:
        names.append(ESTIMATOR_PACKAGES[root])
    return [f"{name}=={importlib.metadata.version(name)}" for name in names]


# A dataset type as MLflow's signature names it.
MLFLOW_TYPES = {
    "int": "long", "float": "double", "str": "string", "category": "string", "bool": "boolean",
    "datetime": "datetime",
}  # fmt: skip


def model_signature(schema: DatasetSchema, columns: list[str], predictions: Any) -> ModelSignature:
    """What a logged model takes, from the declared schema rather than inferred from a few rows: a column
    the dataset may lack or leave empty is optional, and an int one is a double then (pandas, which
    MLflow's pyfunc hands the model, has no missing int: a user's frame holds NaN there). The outputs
    are inferred from ``predictions``, what pyfunc's predict returns."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema, TensorSpec

    inputs: list[ColSpec | TensorSpec] = []
    for name in columns:
        column = schema.column(name)
        optional = column.may_be_missing
        kind = "double" if optional and column.dtype == "int" else MLFLOW_TYPES[column.dtype]
        inputs.append(ColSpec(kind, name, required=not optional))
    return ModelSignature(inputs=Schema(inputs), outputs=infer_signature(None, predictions).outputs)


class GateConfig(BaseModel):
    """The registry gate. ``floors`` bound each named metric on its worse side: a minimum for metrics
    where higher is better (roc_auc, accuracy, r2...), a maximum where lower is (rmse, log_loss...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    primary_metric: str | None = Field(
        default=None, description="default: the task's (roc_auc, macro_f1, rmse)"
    )
    margin: float = Field(default=0.0, ge=0.0)
    floors: dict[str, float] = Field(default_factory=dict)
    latency_budget_ms: float = Field(default=50.0, gt=0)
    min_prediction_std: float = Field(default=1e-3, ge=0)


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    dataset: str
    task: TaskKind = "binary"  # the default of configurations written before task kinds
    seed: int = 0
    estimator: EstimatorConfig
    gate: GateConfig = GateConfig()

    @model_validator(mode="before")
    @classmethod
    def _classification_is_binary(cls, data: Any) -> Any:
        # Configurations written before task kinds said "classification" and meant two classes.
        if isinstance(data, dict) and data.get("task") == "classification":
            return {**data, "task": "binary"}
        return data

    @model_validator(mode="after")
    def _metrics_fit_task(self) -> ModelConfig:
        known = METRICS[self.task]
        if self.gate.primary_metric is not None and self.gate.primary_metric not in known:
            raise ValueError(
                f"gate.primary_metric {self.gate.primary_metric!r} is not a {self.task} metric "
                f"(one of {', '.join(known)})"
            )
        for metric in self.gate.floors:
            if metric not in known:
                raise ValueError(
                    f"gate.floors.{metric}: not a {self.task} metric (one of {', '.join(known)})"
                )
        return self

    @property
    def primary_metric(self) -> str:
        return self.gate.primary_metric or DEFAULT_PRIMARY_METRIC[self.task]


def load_model_config(config_dir: Path, dataset: str) -> ModelConfig:
    path = config_dir / "models" / f"{dataset}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no model config for dataset {dataset!r} at {path}")
    return read_config(path, ModelConfig)


def model_configs(config_dir: Path) -> list[ModelConfig]:
    """Every declared model; InvalidConfig naming the first file that does not validate."""
    return [read_config(p, ModelConfig) for p in sorted((config_dir / "models").glob("*.yaml"))]


def valid_model_configs(config_dir: Path) -> tuple[list[ModelConfig], list[ConfigProblem]]:
    """The declared models that validate, and the problems of those that do not: for a service that
    serves many models, where one bad file must not take the others down."""
    configs: list[ModelConfig] = []
    problems: list[ConfigProblem] = []
    for path in sorted((config_dir / "models").glob("*.yaml")):
        try:
            configs.append(read_config(path, ModelConfig))
        except InvalidConfig as exc:
            problems.extend(exc.problems)
    return configs, problems


def make_estimator(config: ModelConfig) -> Any:
    return build_estimator(config.estimator, config.task, config.seed)


def servable(pipeline: dict[str, Any], estimator: Any) -> Pipeline:
    """The served artefact: raw records in, predictions out."""
    from sklearn.pipeline import Pipeline

    from shared.ml.steps import FeatureTransformer

    return Pipeline([("features", FeatureTransformer(pipeline)), ("estimator", estimator)])


def limit_native_threads() -> threadpool_limits:
    """Runs OpenMP/BLAS in one thread: what serving does, and what the gate measures.

    Their worker threads spin while waiting; on a busy 2-core machine one record through the demo model
    took a median 11 ms with 2 OpenMP threads and 3.4 ms with 1. Serving scales with worker processes,
    not native threads. Works as a context manager, or process-wide when left open.

    threadpoolctl limits only the pools loaded when it is called, and scikit-learn (whose OpenMP runtime
    HistGradientBoosting and the forests use) is imported only once a model is built or loaded: it is
    imported here first, or a serving worker limited at its start would score with every core's thread.
    """
    import sklearn  # noqa: F401  (loads its OpenMP runtime, for the limit to reach it)

    return threadpool_limits(limits=1)


def sanity_problems(
    model: Any, holdout: pl.DataFrame, target: str, config: ModelConfig
) -> tuple[list[str], float]:
    """What makes a model unfit to serve whatever its metrics: NaN or constant output, slowness.

    Returns the problems found and the measured median single-record latency (ms).
    """
    problems: list[str] = []
    gate = config.gate
    if is_classification(config.task) and (classes := holdout[target].drop_nulls().unique()).len() < 2:
        problems.append(
            f"the holdout holds one class ({', '.join(map(repr, classes.to_list()))}): a classifier cannot "
            "be validated on it (more rows, or more distinct rows, are needed)"
        )
    records = holdout.drop(target)
    values = predict_outputs(model, records, config.task).numeric
    spread = float(np.max(np.std(values, axis=0))) if values.size else 0.0
    bad_rows = ~np.isfinite(values).reshape(len(values), -1).all(axis=1)
    if bad_rows.any():
        problems.append(f"{int(bad_rows.sum())} non-finite predictions on the holdout")
    elif spread < gate.min_prediction_std:
        problems.append(f"constant predictions (std {spread:.2g} < {gate.min_prediction_std})")
    latency = _single_record_latency_ms(model, records, gate.latency_budget_ms, config.task)
    if latency > gate.latency_budget_ms:
        problems.append(
            f"single-record latency {latency:.1f} ms over the budget of {gate.latency_budget_ms} ms"
        )
    return problems, latency


def _single_record_latency_ms(
    model: Any, records: pl.DataFrame, budget_ms: float, task: str, rounds: int = 3
) -> float:
    """Median single-record latency, the best of up to ``rounds`` rounds of 25 records.

    A slow model is slow in every round; a machine busy with other work (training, a test suite) is
    not busy in every round, and one unlucky round must not reject a sound model.
    """
    sample = list(records.head(25).iter_slices(1))
    if not sample:
        return math.nan
    best = math.inf
    with limit_native_threads():
        for _ in range(rounds):
            timings = []
            for row in sample:
                started = time.perf_counter()
                predict_outputs(model, row, task)
                timings.append((time.perf_counter() - started) * 1000)
            best = min(best, float(np.median(timings)))
            if best <= budget_ms:
                break
    return best


def load_logged_model(local_dir: str | Path, config: ModelConfig) -> Any:
    """A model the mesh logged (downloaded to ``local_dir``), loaded with the mesh's own trusted types.

    Not ``mlflow.sklearn.load_model``: that trusts the list of types the model file itself declares,
    so a crafted artifact could name any type. Here the list comes from the code and the model's
    configuration (shared.ml.estimators.trusted_types), and every tree's node indices are checked before
    any inference follows them (shared.ml.estimators.tree_problems)."""
    import skops.io
    from mlflow.models import Model

    flavor = Model.load(str(local_dir)).flavors.get("sklearn")
    if flavor is None or flavor.get("serialization_format") != "skops":
        raise ValueError(f"{local_dir} is not a model the mesh logged (sklearn flavour saved with skops)")
    path = Path(local_dir) / flavor["pickled_model"]
    with SKOPS_FILES:
        model = skops.io.load(path, trusted=trusted_types(config.estimator, config.task))
    if problems := tree_problems(model):
        raise ValueError(f"{local_dir} holds malformed trees: {'; '.join(problems[:3])}")
    return model


class TrainingDataError(ValueError):
    """Training data that cannot make a model of the configured task: named by column, never retried."""


def training_data_problems(frame: pl.DataFrame, target: str, task: str) -> list[str]:
    """What makes ``frame`` unfit to train a ``task`` model on ``target``, in words a person can act on."""
    if frame.height == 0:
        return ["the training split has no rows"]
    labels = frame[target]
    if labels.null_count():
        return [f"target column {target!r} has {labels.null_count()} missing values"]
    if task == "regression":
        if not labels.dtype.is_numeric():
            return [f"target column {target!r} is {labels.dtype}, a regression task needs numbers"]
        return []
    classes = labels.n_unique()
    if classes < 2:
        return [
            f"target column {target!r} has one class ({labels[0]!r}) in the training split: nothing to learn"
        ]
    if task == "binary" and classes > 2:
        return [f"target column {target!r} has {classes} classes; a binary task has two (use multiclass)"]
    return []


def fit_servable(
    config: ModelConfig, train_frame: pl.DataFrame, target: str, pipeline: dict[str, Any]
) -> Pipeline:
    """Fit ``config``'s estimator on a feature set's train split; the served pipeline around it."""
    if problems := training_data_problems(train_frame, target, config.task):
        raise TrainingDataError("; ".join(problems))
    estimator = make_estimator(config)
    labels = train_frame[target]
    y = labels.cast(pl.Float64).to_numpy() if config.task == "regression" else labels.to_numpy()
    estimator.fit(train_frame.drop(target).to_numpy(), y)
    return servable(pipeline, estimator)
