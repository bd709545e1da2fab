"""Serving logic: the model holder behind the hot swap, request validation, prediction sampling.

BentoML offers no supported in-server model swap (its maintainers point to rolling restarts), so the
swap is ours: a new version is downloaded, deserialised and warmed up *beside* the serving one, then a
single reference is replaced. A request reads that reference once, so in-flight requests finish on the
model they started with; a failed load leaves the old model serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import mlflow
import numpy as np
import polars as pl
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from opentelemetry import trace
from opentelemetry.trace import Tracer
from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from shared import events
from shared.bus import MeshBus
from shared.events import PredictionMade, new_event, utcnow
from shared.ml.datasets import DatasetSchema
from shared.ml.features import FeaturePipeline
from shared.ml.modeling import CHAMPION
from shared.runtime.logging import get_logger

log = get_logger("mesh.serving")

MODEL_LOADS = Counter("mesh_model_loads_total", "Model versions loaded", ["outcome"])
MODEL_SWAP_SECONDS = Histogram(
    "mesh_model_swap_duration_seconds", "Download, load and warm-up of a new version"
)
MODEL_VERSION = Gauge("mesh_model_version_serving", "Model version currently served", ["model"])
PREDICTIONS = Counter("mesh_predictions_total", "Records predicted", ["model", "version"])
PREDICTIONS_DROPPED = Counter("mesh_prediction_records_dropped_total", "Sampled records dropped (queue full)")


class RecordError(ValueError):
    """A request record that does not fit the model's inputs; ``field`` names where."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


def record_model(schema: DatasetSchema, columns: list[str]) -> type[BaseModel]:
    """A pydantic model of one request record: the model's raw inputs, their types, ranges and categories."""
    fields: dict[str, Any] = {}
    for name in columns:
        col = schema.column(name)
        kind: Any
        constraints: dict[str, Any] = {}
        if col.dtype == "int":
            kind = int
        elif col.dtype == "float":
            kind = float
        elif col.dtype == "bool":
            kind = bool
        elif col.allowed:
            kind = Literal[tuple(col.allowed)]
        else:
            kind = str
        if col.min is not None:
            constraints["ge"] = col.min
        if col.max is not None:
            constraints["le"] = col.max
        optional = not col.required or col.max_null_rate > 0
        annotation = kind | None if optional else kind
        fields[name] = (annotation, Field(default=None if optional else ..., **constraints))
    config = ConfigDict(extra="forbid", strict=False)
    return create_model("Record", __config__=config, **fields)


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    run_id: str
    feature_set_id: str
    snapshot_ids: list[str]
    loaded_at: str
    model: Any = field(repr=False)
    record: type[BaseModel] = field(repr=False)
    columns: list[str] = field(repr=False)
    schema: DatasetSchema = field(repr=False)

    @property
    def data_digest(self) -> str:
        """A short digest of the snapshots behind the model: equal digests, equal training data."""
        return hashlib.sha256(json.dumps(sorted(self.snapshot_ids)).encode()).hexdigest()[:16]

    @property
    def headers(self) -> dict[str, str]:
        return {
            "X-Model-Version": f"{self.name}/{self.version}",
            "X-Model-Lineage": (
                f"run={self.run_id}; feature_set={self.feature_set_id}; data={self.data_digest}"
            ),
        }

    def provenance(self) -> dict[str, Any]:
        """What every prediction carries: enough to follow it to its run and data."""
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "feature_set_id": self.feature_set_id,
            "data_digest": self.data_digest,
        }

    def describe(self) -> dict[str, Any]:
        """GET /model: the provenance plus the snapshots themselves, load time and inputs."""
        return {
            **self.provenance(),
            "snapshot_ids": self.snapshot_ids,
            "loaded_at": self.loaded_at,
            "inputs": self.columns,
        }

    def validate(self, records: list[Any], where: str) -> pl.DataFrame:
        """Records -> a typed frame, or RecordError naming the first bad field (``features.age``)."""
        rows = []
        for index, raw in enumerate(records):
            prefix = where if len(records) == 1 and where == "features" else f"{where}[{index}]"
            if not isinstance(raw, dict):
                raise RecordError(prefix, "must be an object of named fields")
            try:
                rows.append(self.record.model_validate(raw).model_dump())
            except ValidationError as exc:
                first = exc.errors()[0]
                location = ".".join(str(p) for p in first["loc"])
                raise RecordError(f"{prefix}.{location}" if location else prefix, first["msg"]) from None
        return pl.DataFrame(
            rows, schema={c: self.schema.polars_schema[c] for c in self.columns}, orient="row"
        )

    def predict(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        scores = np.asarray(self.model.predict_proba(frame))[:, 1]
        return (scores >= 0.5).astype(int), scores


def load_version(client: MlflowClient, name: str, version: str) -> LoadedModel:
    """Download, deserialise and warm up one registered version; raises if it cannot serve."""
    details = client.get_model_version(name, version)
    local = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}")
    model = mlflow.sklearn.load_model(local)
    pipeline = FeaturePipeline.from_dict(model.named_steps["features"].pipeline)
    columns = pipeline.spec.input_columns
    example = Model.load(local).load_input_example(local)
    loaded = LoadedModel(
        name=name,
        version=str(version),
        run_id=details.run_id or "",
        feature_set_id=(details.tags or {}).get("mesh.feature_set_id", ""),
        snapshot_ids=json.loads((details.tags or {}).get("mesh.snapshot_ids", "[]")),
        loaded_at=utcnow().isoformat(),
        model=model,
        record=record_model(pipeline.schema, columns),
        columns=columns,
        schema=pipeline.schema,
    )
    # Warm-up through the same path requests take; a model that cannot answer it never serves.
    if example is None:
        raise ValueError(f"version {version} has no input example to warm up on")
    # Through polars: pandas writes a missing value as NaN, which a request would send as null.
    records = pl.from_pandas(example).select(columns).to_dicts()
    frame = loaded.validate(records, "warmup")
    _, scores = loaded.predict(frame)
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"version {version} produced non-finite scores on its input example")
    return loaded


class ModelHolder:
    """The one reference requests read; replaced whole, never mutated."""

    def __init__(self, name: str, tracer: Tracer | None = None) -> None:
        self.name = name
        self.current: LoadedModel | None = None
        self._lock = asyncio.Lock()
        self._tracer = tracer or trace.get_tracer("mesh.serving")

    async def sync_to_champion(self, client: MlflowClient) -> bool:
        """Serve whatever the ``champion`` alias names now; True if the served version changed."""
        async with self._lock:  # one load at a time: a burst of promotions must not load in parallel
            try:
                version = await asyncio.to_thread(client.get_model_version_by_alias, self.name, CHAMPION)
            except MlflowException:
                return False  # no champion yet
            if self.current is not None and self.current.version == str(version.version):
                return False
            started = time.perf_counter()
            previous = self.current.version if self.current else None
            attributes = {"mesh.model_name": self.name, "mesh.model_version": str(version.version)}
            with self._tracer.start_as_current_span("serving.swap", attributes=attributes) as span:
                span.set_attribute("mesh.previous_version", previous or "")
                try:
                    loaded = await asyncio.to_thread(load_version, client, self.name, str(version.version))
                except Exception as exc:
                    MODEL_LOADS.labels("failed").inc()
                    span.record_exception(exc)
                    log.exception(
                        "model load failed; the current model keeps serving", version=version.version
                    )
                    return False
                self.current = loaded  # the swap: one reference assignment
            MODEL_LOADS.labels("loaded").inc()
            MODEL_SWAP_SECONDS.observe(time.perf_counter() - started)
            MODEL_VERSION.labels(self.name).set(float(loaded.version))
            log.info("model swapped", model=self.name, version=loaded.version, previous=previous)
            return True


@dataclass(frozen=True)
class _Answered:
    """One answered request, as the sampler queues it: references only, no copies or conversions."""

    loaded: LoadedModel
    frame: pl.DataFrame
    predictions: np.ndarray
    scores: np.ndarray
    request_ids: list[str]
    at: datetime

    def records(self, rate: float) -> list[PredictionMade]:
        return [
            PredictionMade(
                request_id=self.request_ids[i],
                model_name=self.loaded.name,
                model_version=self.loaded.version,
                features=row,
                prediction=int(self.predictions[i]),
                probability=float(self.scores[i]),
                predicted_at=self.at,
            )
            for i, row in enumerate(self.frame.iter_rows(named=True))
            if rate >= 1 or random.random() < rate
        ]


@dataclass
class PredictionSampler:
    """Publishes a sample of predictions to ``predictions`` off the response path.

    A request only queues a reference to what it answered; a background task samples, builds the
    records and writes them in pipelined batches. Past ``capacity`` queued records, answers are
    dropped and counted, rather than slowing or failing requests.
    """

    bus: MeshBus
    rate: float
    capacity: int = 10_000
    batch: int = 500
    _queue: asyncio.Queue[_Answered] = field(init=False)
    _queued: int = field(default=0, init=False)  # records waiting, across queued answers
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue()

    def offer(
        self,
        loaded: LoadedModel,
        frame: pl.DataFrame,
        predictions: np.ndarray,
        scores: np.ndarray,
        request_ids: list[str],
    ) -> None:
        if self.rate <= 0:
            return
        if self._queued + frame.height > self.capacity:
            PREDICTIONS_DROPPED.inc(frame.height)
            return
        self._queued += frame.height
        self._queue.put_nowait(_Answered(loaded, frame, predictions, scores, request_ids, utcnow()))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="prediction-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while not self._queue.empty():
            await self._flush(self._take_batch())

    def _take(self, answered: _Answered) -> list[PredictionMade]:
        self._queued -= answered.frame.height
        return answered.records(self.rate)

    def _take_batch(self, first: _Answered | None = None) -> list[PredictionMade]:
        records = self._take(first) if first is not None else []
        while not self._queue.empty() and len(records) < self.batch:
            records.extend(self._take(self._queue.get_nowait()))
        return records

    async def _drain(self) -> None:
        while True:
            await self._flush(self._take_batch(await self._queue.get()))

    async def _flush(self, records: list[PredictionMade]) -> None:
        if not records:
            return
        try:
            await self.bus.publish_many([new_event(events.PREDICTIONS, record) for record in records])
        except Exception:
            PREDICTIONS_DROPPED.inc(len(records))
            log.exception("could not publish prediction records", count=len(records))


def new_request_ids(count: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(count)]
