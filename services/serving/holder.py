"""The served model and its hot swap.

BentoML offers no supported in-server model swap (its maintainers point to rolling restarts), so the
swap is ours: a new version is downloaded, deserialised and warmed up *beside* the serving one, then a
single reference is replaced. A request reads that reference once, so in-flight requests finish on the
model they started with; a failed load leaves the old model serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import mlflow
import numpy as np
import polars as pl
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from opentelemetry import trace
from opentelemetry.trace import Tracer
from pydantic import BaseModel

from services.serving.metrics import MODEL_LOADS, MODEL_SWAP_SECONDS, MODEL_VERSION
from services.serving.records import record_model, validate_records
from shared.events import utcnow
from shared.ml.datasets import DatasetSchema
from shared.ml.features import FeaturePipeline
from shared.ml.modeling import CHAMPION
from shared.runtime.logging import get_logger

log = get_logger("mesh.serving")

FIRST_RETRY_S = 0.5  # the first load retries fast: at start, MLflow is often still coming up


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
        """Records -> a frame typed as the schema declares the model's inputs (see validate_records)."""
        dtypes = {c: self.schema.polars_schema[c] for c in self.columns}
        return validate_records(self.record, dtypes, records, where)

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

    async def follow_champion(self, client: MlflowClient, every_s: float) -> None:
        """The first load (waiting for MLflow with backoff), then a check of the alias every ``every_s``
        in case a promotion event was missed. Runs until cancelled."""
        delay = FIRST_RETRY_S
        while True:
            try:
                await self.sync_to_champion(client)
                delay = every_s
            except Exception as exc:  # MLflow not up yet, or unreachable for a while
                log.warning("champion check failed", error=str(exc))
                delay = min(delay * 2, every_s)
            await asyncio.sleep(delay)
