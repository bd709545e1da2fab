"""Registry service wiring: the gate on ``model.trained``; promote and rollback commands over HTTP."""

from __future__ import annotations

from fastapi import FastAPI

from services.registry import consumers, routes
from services.registry.deps import RegistryDeps
from services.registry.schemas import DESCRIPTION
from shared import events
from shared.runtime.mlflow_client import mlflow_client
from shared.runtime.service import ServiceRuntime
from shared.runtime.settings import MeshSettings


def create_app(settings: MeshSettings | None = None) -> FastAPI:
    runtime = ServiceRuntime("registry", settings)
    deps = RegistryDeps.of(runtime, mlflow=mlflow_client(runtime.settings))
    runtime.consume(events.MODEL_TRAINED, consumers.on_model_trained, deps)
    runtime.require_http("mlflow", f"{runtime.settings.effective_mlflow_uri}/health")
    return runtime.asgi(routes.router, deps=deps, description=DESCRIPTION)
