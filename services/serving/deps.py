"""What the serving service's consumers, routes and prediction endpoints are handed."""

from __future__ import annotations

import dataclasses

from mlflow.tracking import MlflowClient

from services.serving.holder import ModelHolder
from services.serving.sampler import PredictionSampler
from shared.runtime.service import ServiceDeps


@dataclasses.dataclass(frozen=True)
class ServingDeps(ServiceDeps):
    """Settings, bus, tracer and logger, plus the holder of the served model, the sampler answered
    records go to, and the MLflow client the holder loads champions through."""

    holder: ModelHolder
    sampler: PredictionSampler
    mlflow: MlflowClient
