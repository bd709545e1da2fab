"""Training service wiring: ``features.ready`` and ``retrain.requested`` in, ``model.trained`` out."""

from __future__ import annotations

from starlette.applications import Starlette

from services.training import consumers
from services.training.deps import TrainingDeps
from shared import events
from shared.runtime.mlflow_client import mlflow_client
from shared.runtime.service import ServiceRuntime
from shared.runtime.settings import MeshSettings


def create_app(settings: MeshSettings | None = None) -> Starlette:
    runtime = ServiceRuntime("training", settings)
    deps = TrainingDeps.of(runtime, mlflow=mlflow_client(runtime.settings))
    runtime.require_http("mlflow", f"{runtime.settings.effective_mlflow_uri}/health")
    runtime.consume(events.FEATURES_READY, consumers.on_features_ready, deps)
    runtime.consume(events.RETRAIN_REQUESTED, consumers.on_retrain_requested, deps)
    return runtime.asgi(deps=deps)
