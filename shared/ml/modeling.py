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
from typing import Any, Literal

import numpy as np
import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field
from sklearn import metrics as skm
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from shared.ml.features import FeatureTransformer

# Registry aliases: the version serving, and the one it replaced (what a rollback returns to).
CHAMPION = "champion"
PREVIOUS = "previous"

# Types a logged model may contain beyond what skops trusts by default, reviewed one by one: loading a
# model runs no code outside this list (MLflow saves scikit-learn models with skops).
# What a logged model needs installed to load (besides the mesh's own shared/ package, whose feature
# transformer it holds). Given explicitly: otherwise MLflow infers them by loading the model in a
# subprocess, which took most of the time of logging a model (../shared/notes/dependencies.md).
MODEL_REQUIREMENTS = ("scikit-learn", "polars", "numpy", "scipy", "skops", "threadpoolctl")


def model_requirements() -> list[str]:
    """``MODEL_REQUIREMENTS`` pinned to the versions installed here, the ones the model was fitted with."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in MODEL_REQUIREMENTS]


SKOPS_TRUSTED_TYPES = [
    "shared.ml.features.FeatureTransformer",  # ours: carries the feature spec and fitted state as plain data
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",  # written by our own training
]


class EstimatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["logistic_regression", "hist_gradient_boosting", "random_forest", "lightgbm"]
    params: dict[str, Any] = Field(default_factory=dict)


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    primary_metric: str = "roc_auc"
    margin: float = Field(default=0.0, ge=0.0)
    floors: dict[str, float] = Field(default_factory=dict)
    latency_budget_ms: float = Field(default=50.0, gt=0)
    min_prediction_std: float = Field(default=1e-3, ge=0)


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    dataset: str
    task: Literal["classification"] = "classification"
    seed: int = 0
    estimator: EstimatorConfig
    gate: GateConfig = GateConfig()


def load_model_config(config_dir: Path, dataset: str) -> ModelConfig:
    path = config_dir / "models" / f"{dataset}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no model config for dataset {dataset!r} at {path}")
    return ModelConfig.model_validate(yaml.safe_load(path.read_text()))


def model_configs(config_dir: Path) -> list[ModelConfig]:
    return [
        ModelConfig.model_validate(yaml.safe_load(p.read_text()))
        for p in sorted((config_dir / "models").glob("*.yaml"))
    ]


def make_estimator(config: ModelConfig) -> Any:
    params = dict(config.estimator.params)
    kind = config.estimator.kind
    if kind == "logistic_regression":
        return make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=1000, random_state=config.seed, **params)
        )
    if kind == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(random_state=config.seed, **params)
    if kind == "random_forest":
        return RandomForestClassifier(random_state=config.seed, n_jobs=1, **params)
    try:
        from lightgbm import LGBMClassifier
    except ImportError as exc:  # optional: not in the locked core environment
        raise RuntimeError("estimator kind 'lightgbm' needs the lightgbm package installed") from exc
    return LGBMClassifier(random_state=config.seed, n_jobs=1, verbose=-1, deterministic=True, **params)


def servable(pipeline: dict[str, Any], estimator: Any) -> Pipeline:
    """The served artefact: raw records in, predictions out."""
    return Pipeline([("features", FeatureTransformer(pipeline)), ("estimator", estimator)])


def limit_native_threads() -> threadpool_limits:
    """Runs OpenMP/BLAS in one thread: what serving does, and what the gate measures.

    Their worker threads spin while waiting; on a busy 2-core machine one record through the demo model
    took a median 11 ms with 2 OpenMP threads and 3.4 ms with 1. Serving scales with worker processes,
    not native threads. Works as a context manager, or process-wide when left open.
    """
    return threadpool_limits(limits=1)


def positive_scores(model: Any, records: Any) -> np.ndarray:
    return np.asarray(model.predict_proba(records))[:, 1]


def evaluate(model: Any, holdout: pl.DataFrame, target: str) -> dict[str, float]:
    """Classification metrics of ``model`` (raw records in) on ``holdout``."""
    y_true = holdout[target].to_numpy()
    scores = positive_scores(model, holdout.drop(target))
    y_pred = (scores >= 0.5).astype(int)
    result = {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "precision": skm.precision_score(y_true, y_pred, zero_division=0),
        "recall": skm.recall_score(y_true, y_pred, zero_division=0),
        "f1": skm.f1_score(y_true, y_pred, zero_division=0),
        "roc_auc": skm.roc_auc_score(y_true, scores) if len(np.unique(y_true)) > 1 else float("nan"),
    }
    return {k: float(v) for k, v in result.items()}


def sanity_problems(
    model: Any, holdout: pl.DataFrame, target: str, gate: GateConfig
) -> tuple[list[str], float]:
    """What makes a model unfit to serve whatever its metrics: NaN or constant output, slowness.

    Returns the problems found and the measured median single-record latency (ms).
    """
    problems: list[str] = []
    records = holdout.drop(target)
    scores = positive_scores(model, records)
    if not np.all(np.isfinite(scores)):
        problems.append(f"{int(np.sum(~np.isfinite(scores)))} non-finite predictions on the holdout")
    elif float(np.std(scores)) < gate.min_prediction_std:
        problems.append(f"constant predictions (std {float(np.std(scores)):.2g} < {gate.min_prediction_std})")
    latency = _single_record_latency_ms(model, records, gate.latency_budget_ms)
    if latency > gate.latency_budget_ms:
        problems.append(
            f"single-record latency {latency:.1f} ms over the budget of {gate.latency_budget_ms} ms"
        )
    return problems, latency


def _single_record_latency_ms(model: Any, records: pl.DataFrame, budget_ms: float, rounds: int = 3) -> float:
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
                model.predict_proba(row)
                timings.append((time.perf_counter() - started) * 1000)
            best = min(best, float(np.median(timings)))
            if best <= budget_ms:
                break
    return best
