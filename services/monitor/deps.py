"""What the monitor's consumers, routes and window ticker are handed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mlflow.tracking import MlflowClient

from services.monitor.windows import Monitor
from shared.events import DriftDetected, Envelope
from shared.runtime.service import ServiceDeps


@dataclasses.dataclass
class DriftEpisode:
    """The ``drift.detected`` event of the episode in progress: the cause a retrain continues, so the
    retrain's chain starts at the drift that called for it. None until the first episode starts."""

    announced: Envelope[DriftDetected] | None = None


@dataclasses.dataclass(frozen=True)
class MonitorDeps(ServiceDeps):
    """Besides settings, bus, tracer and logger: the in-memory windows of the served model, the MLflow
    client its references are read with, and the drift episode in progress."""

    monitor: Monitor
    mlflow: MlflowClient
    episode: DriftEpisode

    @property
    def dataset(self) -> str:
        return self.monitor.config.dataset

    @property
    def feedback_dir(self) -> Path:
        """Where labelled live rows are written for ingest to store as a snapshot of the dataset."""
        return self.settings.effective_data_root / "feedback" / self.dataset
