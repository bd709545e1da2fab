"""Monitor state: live predictions joined with late labels, windows per model version, drift and
performance signals, and the feedback rows a retrain will learn from. In memory and bounded; every
computation is a polars (or numpy/scipy) operation over a whole window.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import polars as pl

from services.monitor.drift import current_distribution, window_drift
from services.monitor.policy import Decision, MonitorConfig, TriggerPolicy, WindowSignals, load_monitor_config
from shared.events import utcnow
from shared.ml.datasets import DatasetSchema, load_schema
from shared.ml.features import FeatureSpec, load_feature_spec

if TYPE_CHECKING:  # an annotation here; at run time the module would import mlflow, which it never uses
    from services.monitor.references import Reference

HISTORY = 100  # window results kept for /drift and the report


@dataclass
class WindowResult:
    model_version: str
    rows: int
    labelled_rows: int
    started_at: str
    ended_at: str
    scores: dict[str, dict[str, float]]
    performance_drop: float | None
    accuracy: float | None
    decision: Decision
    distributions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def window(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "labelled_rows": self.labelled_rows,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "window": self.window(),
            "scores": self.scores,
            "performance_drop": self.performance_drop,
            "accuracy": self.accuracy,
            "decision": self.decision.to_dict(),
        }


def _bounded_concat(frames: list[pl.DataFrame], limit: int) -> pl.DataFrame:
    frame = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
    return frame.tail(limit)


def _once_per_request(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.unique("request_id", keep="first", maintain_order=True)


Params = ParamSpec("Params")
Result = TypeVar("Result")


def _serialised(
    method: Callable[Concatenate[Monitor, Params], Result],
) -> Callable[Concatenate[Monitor, Params], Result]:
    """One caller at a time: consumers, the ticker and routes call in from worker threads
    (``asyncio.to_thread``), and two joins racing over the same labels would count them twice."""

    @functools.wraps(method)
    def locked(self: Monitor, *args: Params.args, **kwargs: Params.kwargs) -> Result:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


class Monitor:
    def __init__(self, config: MonitorConfig, spec: FeatureSpec, schema: DatasetSchema) -> None:
        self.config = config
        self.spec = spec
        self.schema = schema
        self.policy = TriggerPolicy(config)
        self.references: dict[str, Reference] = {}
        columns = {c: schema.polars_schema[c] for c in spec.input_columns}
        self._prediction_schema: dict[str, pl.DataType] = {
            "request_id": pl.String(),
            "model_version": pl.String(),
            "prediction": pl.Int64(),
            "predicted_at": pl.Datetime("us", "UTC"),
            **columns,
        }
        empty = pl.DataFrame(schema=self._prediction_schema)
        self.recent = empty  # joinable predictions, newest last, at most join_capacity rows
        self.windows: dict[str, pl.DataFrame] = {}  # unevaluated predictions per model version
        self.window_started: dict[str, float] = {}
        self.labelled = empty.with_columns(pl.lit(None, pl.Int64).alias("label")).clear()
        self.unmatched_labels = pl.DataFrame(schema={"request_id": pl.String, "label": pl.Int64})
        self.feedback = self.labelled.clone()  # labelled rows not yet handed to a retrain
        self.history: deque[WindowResult] = deque(maxlen=HISTORY)
        self._labelled_since_evaluation = 0
        self._lock = threading.RLock()

    @classmethod
    def for_dataset(cls, config_dir: Path, dataset: str) -> Monitor:
        """The monitor of ``dataset``'s served model, configured from the files under ``config_dir``."""
        return cls(
            load_monitor_config(config_dir, dataset),
            load_feature_spec(config_dir, dataset),
            load_schema(config_dir, dataset),
        )

    @_serialised
    def new_champion(self) -> None:
        """A promotion: the trigger policy starts over (its episode and cooldown are the old model's)."""
        self.policy.new_champion()

    @_serialised
    def results(self) -> list[WindowResult]:
        """The window results kept, oldest first (a copy: the report reads it while windows close)."""
        return list(self.history)

    @_serialised
    def set_reference(self, reference: Reference) -> None:
        self.references[reference.version] = reference

    # ---- intake --------------------------------------------------------------------------------

    @_serialised
    def add_predictions(self, records: list[dict[str, Any]], now: float) -> list[WindowResult]:
        """Take a batch of prediction records; evaluate every window that fills up."""
        frame = (
            pl.DataFrame(records)
            .unnest("features")
            .select([pl.col(c).cast(t, strict=False) for c, t in self._prediction_schema.items()])
        )
        # A redelivered record (batch streams tolerate a rare repeat) must not be joined twice.
        self.recent = _bounded_concat([self.recent, frame], self.config.join_capacity).unique(
            "request_id", keep="last", maintain_order=True
        )
        self._match_labels()
        results = []
        size = self.config.window.size
        for (version,), part in frame.group_by("model_version", maintain_order=True):
            version = str(version)
            self.window_started.setdefault(version, now)
            window = pl.concat([self.windows[version], part]) if version in self.windows else part
            while window.height >= size:  # tumbling: every window is exactly `size` predictions
                full, window = window.head(size), window.slice(size)
                results.append(self._evaluate(version, now, full))
                self.window_started[version] = now
            self.windows[version] = window
        return results

    @_serialised
    def add_labels(self, labels: list[dict[str, Any]], now: float) -> list[WindowResult]:
        """Take a batch of late labels; once enough new ones are joined, judge performance right away."""
        frame = pl.DataFrame(labels, schema={"request_id": pl.String, "label": pl.Int64}, strict=False)
        self.unmatched_labels = _bounded_concat(
            [self.unmatched_labels, frame], self.config.join_capacity
        ).unique("request_id", keep="last")
        self._match_labels()
        if self._labelled_since_evaluation < self.config.performance.min_labels:
            return []
        self._labelled_since_evaluation = 0
        versions = self.labelled.tail(self.config.performance.min_labels)["model_version"].unique().to_list()
        return [self._evaluate(str(version), now) for version in versions]

    def _match_labels(self) -> None:
        """Join waiting labels with the predictions they belong to; keep the rest waiting (bounded)."""
        if self.unmatched_labels.is_empty():
            return
        joined = self.recent.join(self.unmatched_labels, on="request_id", how="inner")
        if joined.is_empty():
            return
        self.unmatched_labels = self.unmatched_labels.join(
            joined.select("request_id"), on="request_id", how="anti"
        )
        # A label redelivered after its request was joined (batch streams tolerate a rare repeat).
        matched = joined.join(self.labelled.select("request_id"), on="request_id", how="anti")
        cap = self.config.join_capacity
        # Each labelled request counts once, whatever path repeated it: the retrain learns from these rows
        # and the policy counts them (a CI run once saw 1,501 feedback rows for 1,200 labels, cause unproven).
        self.labelled = _once_per_request(_bounded_concat([self.labelled, matched], cap))
        self.feedback = _once_per_request(_bounded_concat([self.feedback, matched], cap))
        self._labelled_since_evaluation += matched.height

    @_serialised
    def due(self, now: float) -> list[WindowResult]:
        """Evaluate windows that are old enough and large enough (time-based tumbling)."""
        return [
            self._evaluate(version, now)
            for version, frame in list(self.windows.items())
            if frame.height >= self.config.window.min_size
            and now - self.window_started[version] >= self.config.window.max_seconds
        ]

    # ---- evaluation ----------------------------------------------------------------------------

    def _evaluate(self, version: str, now: float, full: pl.DataFrame | None = None) -> WindowResult:
        """Judge one version: drift on ``full`` (or on its open window if that is large enough, which then
        closes), performance on its latest labelled rows whenever there are enough of them."""
        started = self.window_started.get(version, now)
        frame = full
        if frame is None:
            open_window = self.windows.get(version)
            if open_window is not None and open_window.height >= self.config.window.min_size:
                frame = open_window
                del self.windows[version], self.window_started[version]
            else:
                frame = pl.DataFrame(schema=self._prediction_schema)
        reference = self.references.get(version)
        columns = self.spec.input_columns
        scores = window_drift(reference.profile, frame, columns) if reference and frame.height else {}
        distributions = (
            {c: chart_series(reference.profile["columns"][c], frame[c]) for c in scores} if reference else {}
        )

        labelled = self.labelled.filter(pl.col("model_version") == version).tail(self.config.window.size)
        accuracy = None
        drop = None
        if labelled.height >= self.config.performance.min_labels:
            accuracy = (
                float((labelled["prediction"] == labelled["label"]).cast(pl.Float64).sum()) / labelled.height
            )
            if reference is not None and reference.promoted_accuracy is not None:
                drop = reference.promoted_accuracy - accuracy

        decision = self.policy.decide(
            WindowSignals(drift=scores, performance_drop=drop, labelled_rows=self.feedback.height), now
        )
        result = WindowResult(
            model_version=version,
            rows=frame.height,
            labelled_rows=labelled.height,
            started_at=_iso(started),
            ended_at=_iso(now),
            scores=scores,
            performance_drop=drop,
            accuracy=accuracy,
            decision=decision,
            distributions=distributions,
        )
        self.history.append(result)
        return result

    # ---- feedback ------------------------------------------------------------------------------

    @_serialised
    def take_feedback(self, directory: Path) -> tuple[Path, int] | None:
        """Write the labelled live rows as a batch of the dataset (its schema), and forget them."""
        if self.feedback.is_empty():
            return None
        rows = self.feedback
        target = self.spec.target
        batch = rows.select(
            (pl.lit("live-") + pl.col("request_id")).alias(self.spec.id_column),
            pl.col("predicted_at").alias("event_time"),
            *self.spec.input_columns,
            pl.col("label").alias(target),
        )
        # Columns the dataset declares but live traffic does not carry stay null (and must be optional).
        missing = [c for c in self.schema.column_names if c not in batch.columns]
        batch = batch.with_columns(
            pl.lit(None, self.schema.polars_schema[c]).alias(c) for c in missing
        ).select(self.schema.column_names)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"feedback-{utcnow().strftime('%Y%m%dT%H%M%S%f')}.parquet"
        batch.write_parquet(path)
        self.feedback = self.feedback.clear()
        return path, batch.height

    @_serialised
    def latest(self) -> dict[str, Any]:
        latest = self.history[-1].summary() if self.history else None
        return finite(
            {
                "model_name": self.config.model_name,
                "windows": len(self.history),
                "latest": latest,
                "labelled_rows_waiting": self.feedback.height,
                "references": sorted(self.references),
            }
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
