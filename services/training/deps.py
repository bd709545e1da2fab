"""What the training service's consumers are handed."""

from __future__ import annotations

import dataclasses

from mlflow.tracking import MlflowClient

from shared.runtime.service import ServiceDeps


@dataclasses.dataclass(frozen=True)
class TrainingDeps(ServiceDeps):
    """Settings, bus, tracer and logger, plus the MLflow client runs are looked up with; feature sets and
    model configs are read from paths in the settings."""

    mlflow: MlflowClient
