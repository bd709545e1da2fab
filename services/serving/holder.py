"""One served model and its hot swap.

BentoML offers no supported in-server model swap (its maintainers point to rolling restarts), so the
swap is ours: a new version is downloaded, deserialised and warmed up *beside* the serving one, then a
single reference is replaced. A request reads that reference once, so in-flight requests finish on the
model they started with; a failed load (the artifact missing or corrupt, MLflow down) leaves the old model
serving and is remembered (``ModelHolder.failed``) until the alias moves on or a load succeeds. Each model
has a holder of its own, with its own lock: one model's swap never waits for another's (see
services.serving.catalog).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from opentelemetry import trace
from opentelemetry.trace import Tracer
from pydantic import BaseModel

from services.serving.metrics import MODEL_LOADED, MODEL_LOADS, MODEL_SWAP_SECONDS, MODEL_VERSION
from services.serving.records import RecordError, record_model, validate_records, validated_row
from shared.events import utcnow
from shared.ml.datasets import DatasetSchema
from shared.ml.features import FeaturePipeline
from shared.ml.modeling import CHAMPION, ModelConfig, load_logged_model
from shared.ml.tasks import Outputs, is_classification, model_classes, predict_outputs
from shared.runtime.logging import get_logger

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

log = get_logger("mesh.serving")

# What MLflow answers when a model has no champion: the model is not registered, or has no such alias.
# Anything else (the server down, a timeout) is an error, not an answer.
NO_CHAMPION = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


def data_digest(snapshot_ids: list[str]) -> str:
    """A short digest of the snapshots behind a model: equal digests, equal training data."""
    return hashlib.sha256(json.dumps(sorted(snapshot_ids)).encode()).hexdigest()[:16]


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
    task: str = "binary"
    classes: list[Any] | None = None  # a classifier's labels, in the order of its probabilities

    @property
    def data_digest(self) -> str:
        return data_digest(self.snapshot_ids)

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
            "task": self.task,
            "classes": self.classes,
            "inputs": self.columns,
        }

    @functools.cached_property
    def dtypes(self) -> dict[str, pl.DataType]:
        """The model's inputs, typed as the schema declares them."""
        return {c: self.schema.polars_schema[c] for c in self.columns}

    def validate(self, records: list[Any], where: str) -> pl.DataFrame:
        """Records -> a frame typed as the schema declares the model's inputs (see validate_records)."""
        return validate_records(self.record, self.dtypes, records, where)

    def validate_each(self, records: list[Any], where: str) -> tuple[pl.DataFrame, list[RecordError | None]]:
        """Records validated one by one, each named ``where``: the frame of those that fit, in order, and
        each record's refusal (None where it fit)."""
        rows: list[dict[str, Any]] = []
        refusals: list[RecordError | None] = []
        for raw in records:
            try:
                rows.append(validated_row(self.record, raw, where))
                refusals.append(None)
            except RecordError as exc:
                refusals.append(exc)
        return pl.DataFrame(rows, schema=self.dtypes, orient="row"), refusals

    def predict(self, frame: pl.DataFrame) -> Outputs:
        return predict_outputs(self.model, frame, self.task)


def version_provenance(name: str, version: ModelVersion) -> dict[str, Any]:
    """The provenance of a registered version that is not loaded, as a loaded one would give it."""
    tags = version.tags or {}
    snapshot_ids = json.loads(tags.get("mesh.snapshot_ids", "[]"))
    return {
        "name": name,
        "version": str(version.version),
        "run_id": version.run_id or "",
        "feature_set_id": tags.get("mesh.feature_set_id", ""),
        "data_digest": data_digest(snapshot_ids),
    }


def task_of(model: Any) -> str:
    """The task a fitted model serves, from the model itself: a version keeps the task it was trained for
    even when the configuration has changed since."""
    from sklearn.base import is_classifier

    if not is_classifier(model):
        return "regression"
    return "binary" if len(model.classes_) == 2 else "multiclass"


def load_version(client: MlflowClient, config: ModelConfig, version: str) -> LoadedModel:
    """Download, deserialise and warm up one registered version; raises if it cannot serve."""
    import mlflow
    from mlflow.models import Model

    name = config.model_name
    details = client.get_model_version(name, version)
    local = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}")
    model = load_logged_model(local, config)
    task = task_of(model)
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
        task=task,
        classes=model_classes(model) if is_classification(task) else None,
    )
    # Warm-up through the same path requests take; a model that cannot answer it never serves.
    if example is None:
        raise ValueError(f"version {version} has no input example to warm up on")
    # Through polars: pandas writes a missing value as NaN, which a request would send as null.
    records = pl.from_pandas(example).select(columns).to_dicts()
    frame = loaded.validate(records, "warmup")
    if not np.all(np.isfinite(loaded.predict(frame).numeric)):
        raise ValueError(f"version {version} produced non-finite outputs on its input example")
    return loaded


@dataclass(frozen=True)
class SwapFailure:
    """The champion a holder could not load: which version, why, when last, and how many loads in a row
    failed (the reconcile retries it: the artifact may be repaired, MLflow may come back)."""

    version: str
    error: str
    at: datetime
    attempts: int = 1

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "error": self.error,
            "at": self.at.isoformat(),
            "attempts": self.attempts,
        }


class ModelHolder:
    """One declared model: the champion the registry last named, and the one reference requests read
    (replaced whole, never mutated; None while no version of the model is in memory)."""

    def __init__(self, config: ModelConfig, tracer: Tracer | None = None) -> None:
        self.config = config  # replaced when the configuration is read again
        self.current: LoadedModel | None = None
        self.champion: ModelVersion | None = None  # as last read; None: no champion, or not read yet
        self.checked = False  # the alias has been read at least once
        self.failed: SwapFailure | None = None  # the champion's last load, while it keeps failing
        self.last_used = 0.0  # time.monotonic() of the last request answered (or load): the LRU order
        self._lock = asyncio.Lock()
        self._tracer = tracer or trace.get_tracer("mesh.serving")

    @property
    def served(self) -> bool:
        """A version of it is in memory, or the registry names one to load."""
        return self.current is not None or self.champion is not None

    @property
    def version(self) -> str | None:
        """The version it answers with: the loaded one, else the champion a load would bring."""
        if self.current is not None:
            return self.current.version
        return str(self.champion.version) if self.champion is not None else None

    @property
    def name(self) -> str:
        return self.config.model_name

    @property
    def dataset(self) -> str:
        return self.config.dataset

    def touch(self) -> None:
        self.last_used = time.monotonic()

    async def read_champion(self, client: MlflowClient) -> ModelVersion | None:
        """The version the ``champion`` alias names now (None if none); raises if MLflow cannot say."""
        from mlflow.exceptions import MlflowException

        try:
            version = await asyncio.to_thread(client.get_model_version_by_alias, self.name, CHAMPION)
        except MlflowException as exc:
            if exc.error_code not in NO_CHAMPION:
                raise
            version = None
        self.champion, self.checked = version, True
        return version

    async def sync_to_champion(self, client: MlflowClient, *, load: bool = True) -> bool:
        """Serve whatever the ``champion`` alias names now; True if the served version changed.

        A model that is not in memory is only loaded when ``load``; otherwise its champion is noted, for a
        later load on demand."""
        async with self._lock:  # one load at a time: a burst of promotions must not load in parallel
            version = await self.read_champion(client)
            if self.failed is not None and (version is None or self.failed.version != str(version.version)):
                self.failed = None  # the alias moved on: a failure of the version it names now is a new one
            if version is None:
                return False
            if self.current is not None and self.current.version == str(version.version):
                return False
            if self.current is None and not load:
                return False
            return await self._swap(client, str(version.version))

    async def _swap(self, client: MlflowClient, version: str) -> bool:
        started = time.perf_counter()
        previous = self.current.version if self.current else None
        attributes = {"mesh.model_name": self.name, "mesh.model_version": version}
        with self._tracer.start_as_current_span("serving.swap", attributes=attributes) as span:
            span.set_attribute("mesh.previous_version", previous or "")
            try:
                loaded = await asyncio.to_thread(load_version, client, self.config, version)
            except Exception as exc:
                MODEL_LOADS.labels(self.name, "failed").inc()
                span.record_exception(exc)
                attempts = self.failed.attempts + 1 if self.failed is not None else 1
                self.failed = SwapFailure(version, f"{type(exc).__name__}: {exc}", utcnow(), attempts)
                log.exception(
                    "model load failed; the current model keeps serving",
                    model=self.name,
                    version=version,
                    serving=previous,
                    attempts=attempts,
                )
                return False
            self.current = loaded  # the swap: one reference assignment
            self.failed = None
        self.touch()
        MODEL_LOADS.labels(self.name, "loaded").inc()
        MODEL_SWAP_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        MODEL_VERSION.labels(self.name).set(float(loaded.version))
        MODEL_LOADED.labels(self.name).set(1)
        log.info("model swapped", model=self.name, version=loaded.version, previous=previous)
        return True

    def unload(self) -> None:
        """Let go of the loaded version: requests already holding it finish on it, later ones see None."""
        self.current = None
        MODEL_LOADED.labels(self.name).set(0)
