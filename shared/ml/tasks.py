"""Task kinds: what a model predicts, how it is scored, and what it answers.

* ``binary``: two classes (integers, strings or booleans). Scored by ROC AUC, accuracy, F1 (of the
  positive class, the second of the sorted classes as scikit-learn orders them) and log loss.
* ``multiclass``: three or more classes. Scored by macro-F1, accuracy and log loss.
* ``regression``: a number. Scored by RMSE, MAE and R².

Training, the registry gate, serving and the monitor all read a model's outputs through
:func:`predict_outputs`, so a label means the same thing everywhere: the class of highest probability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import polars as pl

from shared.ml.feature_sets import column_profile

TaskKind = Literal["binary", "multiclass", "regression"]
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)

# Every metric the mesh computes, per task, and whether higher is better.
METRICS: dict[str, dict[str, bool]] = {
    "binary": {
        "roc_auc": True,
        "accuracy": True,
        "f1": True,
        "precision": True,
        "recall": True,
        "log_loss": False,
    },
    "multiclass": {"macro_f1": True, "accuracy": True, "log_loss": False},
    "regression": {"rmse": False, "mae": False, "r2": True},
}
# The metrics the monitor can compute on live traffic: from labels and predicted labels (or values) alone.
LIVE_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("accuracy", "f1"),
    "multiclass": ("accuracy", "macro_f1"),
    "regression": ("rmse", "mae", "r2"),
}
DEFAULT_PRIMARY_METRIC: dict[str, str] = {"binary": "roc_auc", "multiclass": "macro_f1", "regression": "rmse"}
DEFAULT_LIVE_METRIC: dict[str, str] = {"binary": "accuracy", "multiclass": "macro_f1", "regression": "rmse"}


def is_classification(task: str) -> bool:
    return task in ("binary", "multiclass")


def higher_is_better(task: str, metric: str) -> bool:
    return METRICS[task][metric]


def worsening(task: str, metric: str, before: float, now: float) -> float:
    """How much worse ``now`` is than ``before`` on ``metric`` (negative: it got better)."""
    return before - now if higher_is_better(task, metric) else now - before


def infer_task(target: pl.Series) -> TaskKind:
    """The task a target column suggests: two distinct values -> binary; a float column with a
    fractional value, or more than 20 distinct integers -> regression; else multiclass."""
    values = target.drop_nulls()
    distinct = values.n_unique()
    if distinct <= 2:
        return "binary"
    if values.dtype.is_float():
        fractional = bool((values != values.round(0)).any())
        if fractional or distinct > 20:
            return "regression"
        return "multiclass"
    if values.dtype.is_integer() and distinct > 20:
        return "regression"
    return "multiclass"


@dataclass(frozen=True)
class Outputs:
    """What a model says about a batch of records."""

    task: str
    predictions: np.ndarray  # labels (as the classes are typed) or values
    probabilities: np.ndarray | None = None  # rows x classes, for classification
    classes: list[Any] | None = None

    @property
    def positive_scores(self) -> np.ndarray | None:
        """The probability of the positive class (binary only): what ROC AUC and drift of outputs read."""
        if self.task != "binary" or self.probabilities is None:
            return None
        return self.probabilities[:, 1]

    @property
    def numeric(self) -> np.ndarray:
        """One number per record to check for NaN and constants: the value, or the probabilities."""
        if self.probabilities is not None:
            return self.probabilities
        return np.asarray(self.predictions, dtype=np.float64)

    def answer(self, row: int) -> dict[str, Any]:
        """One record's answer: ``prediction``; for classification also ``probabilities`` per class,
        and for binary ``probability`` (of the positive class)."""
        if self.probabilities is None or self.classes is None:
            return {"prediction": float(self.predictions[row])}
        result: dict[str, Any] = {"prediction": python_value(self.predictions[row])}
        if self.task == "binary":
            result["probability"] = float(self.probabilities[row, 1])
        result["probabilities"] = {
            str(label): float(p) for label, p in zip(self.classes, self.probabilities[row], strict=True)
        }
        return result


def python_value(value: Any) -> Any:
    """A numpy scalar as the plain Python value JSON can carry."""
    return value.item() if isinstance(value, np.generic) else value


def model_classes(model: Any) -> list[Any]:
    """The classes of a fitted classifier (a Pipeline's last step's), as plain Python values."""
    return [python_value(c) for c in np.asarray(model.classes_)]


def predict_outputs(model: Any, records: Any, task: str) -> Outputs:
    """Classifiers: one ``predict_proba`` call, the label is the class of highest probability (what
    ``predict`` gives too). Regressors: ``predict``."""
    if not is_classification(task):
        return Outputs(task, np.asarray(model.predict(records), dtype=np.float64))
    probabilities = np.asarray(model.predict_proba(records), dtype=np.float64)
    # Some estimators (XGBoost) compute in float32: rows then sum to 1 only within 1e-7.
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    classes = np.asarray(model.classes_)
    return Outputs(task, classes[np.argmax(probabilities, axis=1)], probabilities, model_classes(model))


def evaluate(model: Any, holdout: pl.DataFrame, target: str, task: str) -> dict[str, float]:
    """The task's metrics (``METRICS[task]``) of ``model`` (raw records in) on ``holdout``."""
    outputs = predict_outputs(model, holdout.drop(target), task)
    return score(holdout[target].to_numpy(), outputs)


def score(y_true: np.ndarray, outputs: Outputs) -> dict[str, float]:
    from sklearn import metrics as skm  # here, not at the top: most services never score (~70 MB)

    task = outputs.task
    if task == "regression":
        y = np.asarray(y_true, dtype=np.float64)
        pred = outputs.predictions
        result = {
            "rmse": math.sqrt(skm.mean_squared_error(y, pred)),
            "mae": skm.mean_absolute_error(y, pred),
            "r2": skm.r2_score(y, pred) if len(y) > 1 else math.nan,
        }
        return {k: float(v) for k, v in result.items()}
    assert outputs.probabilities is not None and outputs.classes is not None
    classes = np.asarray(outputs.classes)
    y_true = np.asarray(y_true).astype(classes.dtype, copy=False)
    labels = list(classes)
    result = {"accuracy": skm.accuracy_score(y_true, outputs.predictions)}
    known = np.isin(y_true, classes)
    result["log_loss"] = (
        skm.log_loss(y_true, outputs.probabilities, labels=labels) if known.all() else math.nan
    )
    if task == "binary":
        positive = classes[1]
        kwargs: dict[str, Any] = {"pos_label": positive, "zero_division": 0}
        result["precision"] = skm.precision_score(y_true, outputs.predictions, **kwargs)
        result["recall"] = skm.recall_score(y_true, outputs.predictions, **kwargs)
        result["f1"] = skm.f1_score(y_true, outputs.predictions, **kwargs)
        two = len(np.unique(y_true)) > 1
        result["roc_auc"] = (
            skm.roc_auc_score(y_true == positive, outputs.probabilities[:, 1]) if two else math.nan
        )
    else:
        result["macro_f1"] = skm.f1_score(
            y_true, outputs.predictions, labels=labels, average="macro", zero_division=0
        )
    return {k: float(v) for k, v in result.items()}


def live_metric(
    task: str, metric: str, labels: pl.Series, predictions: pl.Series, positive: str | None = None
) -> float:
    """``metric`` over live rows: observed labels against what the model answered. ``positive`` is the
    binary positive class as text (the f1 of which is scored); default the larger label seen."""
    from sklearn import metrics as skm  # loaded by a monitor once labels come, not by every service

    if task == "regression":
        y = labels.cast(pl.Float64).to_numpy()
        pred = predictions.cast(pl.Float64).to_numpy()
        if metric == "rmse":
            return math.sqrt(float(skm.mean_squared_error(y, pred)))
        if metric == "mae":
            return float(skm.mean_absolute_error(y, pred))
        return float(skm.r2_score(y, pred))
    # Compared as text: a label arrives as JSON (1, "1" or "setosa") whatever the classes' type.
    y_text = labels.cast(pl.String).to_numpy()
    pred_text = predictions.cast(pl.String).to_numpy()
    if metric == "accuracy":
        return float(skm.accuracy_score(y_text, pred_text))
    if metric == "macro_f1":
        return float(skm.f1_score(y_text, pred_text, average="macro", zero_division=0))
    if positive is None:  # as scikit-learn sorts classes; text sorts "10" before "2": give ``positive``
        positive = sorted(set(y_text) | set(pred_text))[-1]
    return float(skm.f1_score(y_text, pred_text, pos_label=positive, zero_division=0))


def output_profile(outputs: Outputs) -> dict[str, Any]:
    """The reference distribution of what a model says (drift of its outputs is scored against it): the
    positive class's probability (binary), the predicted class (multiclass), the value (regression)."""
    if outputs.task == "binary" and outputs.positive_scores is not None:
        return column_profile(pl.Series(outputs.positive_scores), numeric=True)
    if outputs.task == "multiclass":
        labels = pl.Series([str(python_value(v)) for v in outputs.predictions], dtype=pl.String)
        return column_profile(labels, numeric=False, categories=[str(c) for c in outputs.classes or []])
    return column_profile(pl.Series(outputs.predictions, dtype=pl.Float64), numeric=True)
