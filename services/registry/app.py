"""Registry service wiring: the gate on ``model.trained``; promote and rollback commands over HTTP."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from services.registry import consumers, routes
from services.registry.deps import RegistryDeps
from shared import events
from shared.runtime.mlflow_client import mlflow_client
from shared.runtime.service import ServiceRuntime
from shared.runtime.settings import MeshSettings


def create_app(settings: MeshSettings | None = None) -> Starlette:
    runtime = ServiceRuntime("registry", settings)
    deps = RegistryDeps.of(runtime, mlflow=mlflow_client(runtime.settings))
    runtime.consume(events.MODEL_TRAINED, consumers.on_model_trained, deps)
    runtime.require_http("mlflow", f"{runtime.settings.effective_mlflow_uri}/health")
    return runtime.asgi(
        [
            Route("/models/{name}", routes.describe, methods=["GET"]),
            Route("/models/{name}/rollback", routes.rollback, methods=["POST"]),
            Route("/models/{name}/promote", routes.promote, methods=["POST"]),
        ],
        deps=deps,
    )
