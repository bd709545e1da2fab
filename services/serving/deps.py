"""What the serving service's consumers, routes and prediction endpoints are handed."""

from __future__ import annotations

import dataclasses
import os

from services.serving.batching import RecordBatcher
from services.serving.catalog import ModelCatalog
from services.serving.sampler import PredictionSampler
from shared.runtime.service import ServiceDeps


@dataclasses.dataclass(frozen=True)
class ServingDeps(ServiceDeps):
    """Settings, bus, tracer and logger, plus the catalog of served models (each in its holder, loaded
    through MLflow), the sampler answered records go to, the batcher of single-record predictions, and
    which worker process this is."""

    models: ModelCatalog
    sampler: PredictionSampler
    batcher: RecordBatcher | None = None  # None: each single-record prediction scored on its own
    worker: str = dataclasses.field(default_factory=lambda: str(os.getpid()))

    @property
    def worker_header(self) -> dict[str, str]:
        """On every answer: which worker gave it (a multi-worker server answers from several)."""
        return {"X-Serving-Worker": self.worker}
