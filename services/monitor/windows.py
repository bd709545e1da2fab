"""One window's evaluation, as plain computation: stored records into typed frames, drift and
performance of a model version, the trigger policy's decision, and the result people and metrics read.
Everything here is a polars (or numpy/scipy) operation over a whole window; the state lives in Redis
(``state.py``) and the transaction around an evaluation in ``evaluation.py``.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from services.monitor.drift import current_distribution, window_drift
from services.monitor.models import MonitoredModel
from services.monitor.policy import Decision, TriggerPolicy, WindowSignals
from shared.ml.datasets import as_datetimes
from shared.ml.monitoring import OUTPUT_DRIFT
from shared.ml.tasks import live_metric, worsening

if TYPE_CHECKING:  # an annotation here; at run time the module would import mlflow, which it never uses
    from services.monitor.references import Reference


_RECORD_FIELDS = ("request_id", "model_version", "prediction", "probability", "predicted_at")


@dataclass
class WindowResult:
    model_name: str
    model_version: str
    rows: int
    labelled_rows: int
    started_at: str
    ended_at: str
    scores: dict[str, dict[str, float]]
    performance_drop: float | None
    performance_metric: str
    performance: float | None  # the metric on the window's labelled rows, when there were enough
    decision: Decision
    distributions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def window(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "labelled_rows": self.labelled_rows,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }

    def to_json(self) -> str:
        return json.dumps(finite(asdict(self)))

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> WindowResult:
        return cls(**{**stored, "decision": Decision(**stored["decision"])})

    def summary(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "window": self.window(),
            "scores": self.scores,
            "performance_drop": self.performance_drop,
            "performance_metric": self.performance_metric,
            "performance": self.performance,
            "decision": self.decision.to_dict(),
        }


def prediction_frame(model: MonitoredModel, records: Sequence[bytes | str]) -> pl.DataFrame:
    """Stored prediction records (``PredictionMade`` JSON) as a frame of the model's typed inputs."""
    return _typed(model, [json.loads(record) for record in records])


def _typed(model: MonitoredModel, decoded: list[dict[str, Any]]) -> pl.DataFrame:
    flat = [{**r["features"], **{k: r.get(k) for k in _RECORD_FIELDS}} for r in decoded]
    # Times (when predicted, and datetime inputs) arrive as ISO text; parsed as columns, not value by value.
    times = [c for c, dtype in model.prediction_schema.items() if isinstance(dtype, pl.Datetime)]
    as_text = {c: pl.String() for c in times}
    frame = pl.DataFrame(flat, schema={**model.prediction_schema, **as_text}, strict=False)
    return frame.with_columns(as_datetimes(frame[c]) for c in times)


def labelled_frame(model: MonitoredModel, rows: Sequence[bytes | str]) -> pl.DataFrame:
    """Stored labelled rows (``{"label": ..., "record": ...}``) as predictions with a ``label`` column."""
    decoded = [json.loads(row) for row in rows]
    frame = _typed(model, [r["record"] for r in decoded])
    labels = pl.Series("label", [r["label"] for r in decoded], dtype=model.label_dtype, strict=False)
    return frame.with_columns(labels)


@dataclass(frozen=True)
class WindowInputs:
    """What one evaluation of a model version reads from the monitor's state."""

    version: str
    window: pl.DataFrame  # the predictions scored for drift (empty: performance only)
    labelled: pl.DataFrame  # this version's newest labelled rows, at most a window's worth
    feedback_rows: int  # labelled rows waiting for a retrain
    started: float


def evaluate(
    model: MonitoredModel,
    policy: TriggerPolicy,
    reference: Reference | None,
    inputs: WindowInputs,
    now: float,
) -> WindowResult:
    """Judge one version: drift of its window against its reference, performance on its latest labelled
    rows when there are enough; the policy (updated in place) decides."""
    config = model.config
    frame = inputs.window
    scores: dict[str, dict[str, float]] = {}
    distributions: dict[str, dict[str, Any]] = {}
    if reference is not None and frame.height:
        scores = window_drift(reference.profile, frame, model.spec.input_columns)
        profiles = {c: reference.profile["columns"][c] for c in scores}
        if reference.output_profile is not None:
            # Drift of the model's outputs, seen before any label arrives: the positive class's
            # probability (binary), the predicted class (multiclass) or the predicted value.
            outputs = frame.select(pl.col(model.output_column).alias(OUTPUT_DRIFT))
            scores |= window_drift(
                {"columns": {OUTPUT_DRIFT: reference.output_profile}}, outputs, [OUTPUT_DRIFT]
            )
            profiles[OUTPUT_DRIFT] = reference.output_profile
            frame = frame.with_columns(outputs)
        distributions = {c: chart_series(profiles[c], frame[c]) for c in scores}
    labelled = inputs.labelled
    metric = str(config.performance.metric)
    performance = None
    drop = None
    if labelled.height >= config.performance.min_labels:
        performance = live_metric(
            model.task, metric, labelled["label"], labelled["prediction"], model.positive_label
        )
        promoted = reference.promoted_metrics.get(metric) if reference is not None else None
        if promoted is not None:
            drop = worsening(model.task, metric, promoted, performance)
    decision = policy.decide(
        WindowSignals(drift=scores, performance_drop=drop, labelled_rows=inputs.feedback_rows), now
    )
    return WindowResult(
        model_name=model.name,
        model_version=inputs.version,
        rows=frame.height,
        labelled_rows=labelled.height,
        started_at=_iso(inputs.started),
        ended_at=_iso(now),
        scores=scores,
        performance_drop=drop,
        performance_metric=metric,
        performance=performance,
        decision=decision,
        distributions=distributions,
    )


def feedback_batch(model: MonitoredModel, rows: pl.DataFrame) -> pl.DataFrame:
    """Labelled live rows as a batch of the model's dataset (its schema), for ingest to store."""
    spec, schema = model.spec, model.schema
    ids = [(pl.lit("live-") + pl.col("request_id")).alias(spec.id_column)] if spec.id_column else []
    batch = rows.select(
        *ids,
        *([pl.col("predicted_at").alias("event_time")] if "event_time" not in spec.input_columns else []),
        *spec.input_columns,
        pl.col("label").cast(schema.polars_schema[spec.target], strict=False).alias(spec.target),
    )
    # Columns the dataset declares but live traffic does not carry stay null (and must be optional).
    missing = [c for c in schema.column_names if c not in batch.columns]
    return batch.with_columns(pl.lit(None, schema.polars_schema[c]).alias(c) for c in missing).select(
        schema.column_names
    )


def chart_series(reference: dict[str, Any], values: pl.Series) -> dict[str, Any]:
    """Reference and current shares over the same bins or categories, labelled for a bar chart."""
    current = current_distribution(reference, values)
    if reference["kind"] == "numeric":
        edges = [f"{e:.4g}" for e in reference["edges"]]
        labels = [
            f"<{edges[0]}",
            *(f"{a}-{b}" for a, b in itertools.pairwise(edges)),
            f">={edges[-1]}",
        ]
        return {"labels": labels, "reference": list(reference["shares"]), "current": list(current["shares"])}
    labels = list(current["shares"])
    return {
        "labels": labels,
        "reference": [reference["shares"].get(label, 0.0) for label in labels],
        "current": [current["shares"][label] for label in labels],
    }


def finite(value: Any) -> Any:
    """NaN and infinities as null, so results serialise as strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()
