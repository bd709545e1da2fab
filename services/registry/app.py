"""Registry service wiring: the gate on ``model.trained``; promote and rollback commands over HTTP."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from prometheus_client import Counter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.registry.handlers import (
    alias_version,
    evaluate_candidate,
    move_champion,
    record_decision,
    recorded_decision,
    register_and_promote,
    rejected,
)
from shared import events
from shared.bus import PermanentError
from shared.events import Envelope, ModelTrained
from shared.ml.modeling import CHAMPION, PREVIOUS, model_configs
from shared.runtime.service import ServiceRuntime
from shared.runtime.settings import MeshSettings

PROMOTIONS = Counter("mesh_promotions_total", "Champion moves", ["model", "action"])
REJECTIONS = Counter("mesh_rejections_total", "Candidates the gate rejected", ["model"])


def create_app(settings: MeshSettings | None = None) -> Starlette:
    runtime = ServiceRuntime("registry", settings)
    settings = runtime.settings
    client_holder: dict[str, MlflowClient] = {}

    def client() -> MlflowClient:
        return client_holder["client"]

    @runtime.on_startup
    async def connect_mlflow() -> None:
        mlflow.set_tracking_uri(settings.effective_mlflow_uri)
        client_holder["client"] = MlflowClient()

    def gate_for(name: str) -> Any:
        for config in model_configs(settings.config_dir):
            if config.model_name == name:
                return config.gate
        raise PermanentError(f"model {name!r} has no config under {settings.config_dir / 'models'}")

    def decide(trained: ModelTrained) -> tuple[Any, Any]:
        decision = recorded_decision(client(), trained.run_id)
        champion = alias_version(client(), trained.model_name, CHAMPION)
        if decision is None:
            decision, champion = evaluate_candidate(
                trained, settings.effective_data_root, gate_for(trained.model_name), client()
            )
            record_decision(client(), trained.run_id, decision)
        if decision.promote:
            return register_and_promote(client(), trained, decision, champion), None
        return None, rejected(trained, decision)

    async def on_model_trained(event: Envelope[Any]) -> None:
        trained: ModelTrained = event.payload
        attributes = {"mesh.run_id": trained.run_id, "mesh.model_name": trained.model_name}
        # One decision at a time per model, across replicas: two gates racing would both compare
        # against the same champion and could both move the alias.
        lock = runtime.bus.redis.lock(
            f"mesh:lock:registry:{trained.model_name}", timeout=300, blocking_timeout=600
        )
        with runtime.tracer.start_as_current_span("registry.gate", attributes=attributes) as span:
            async with lock:
                try:
                    promoted, rejection = await asyncio.to_thread(decide, trained)
                except FileNotFoundError as exc:
                    raise PermanentError(str(exc)) from exc
            span.set_attribute("mesh.promoted", promoted is not None)
            if promoted is not None:
                span.set_attribute("mesh.model_version", promoted.version)
        if promoted is not None:
            await runtime.bus.emit(events.MODEL_PROMOTED, promoted, cause=event)
            PROMOTIONS.labels(trained.model_name, "promote").inc()
            runtime.log.info("model promoted", model=trained.model_name, version=promoted.version)
        else:
            await runtime.bus.emit(events.MODEL_REJECTED, rejection, cause=event)
            REJECTIONS.labels(trained.model_name).inc()
            runtime.log.info("model rejected", model=trained.model_name, reasons=rejection.reasons)

    def authorized(request: Request) -> JSONResponse | None:
        token = settings.registry_token
        if not token:
            return JSONResponse(
                {"error": "commands are disabled: set MESH_REGISTRY_TOKEN", "field": "authorization"},
                status_code=403,
            )
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse(
                {"error": "missing or wrong bearer token", "field": "authorization"}, status_code=401
            )
        return None

    async def command(request: Request, target: str, reason: str) -> JSONResponse:
        name = request.path_params["name"]
        lock = runtime.bus.redis.lock(f"mesh:lock:registry:{name}", timeout=60, blocking_timeout=60)
        async with lock:
            try:
                promoted = await asyncio.to_thread(move_champion, client(), name, target, reason)
            except LookupError as exc:
                return JSONResponse({"error": str(exc), "field": "version"}, status_code=404)
        event = await runtime.bus.emit(events.MODEL_PROMOTED, promoted)
        PROMOTIONS.labels(name, promoted.action).inc()
        runtime.log.info("champion moved", model=name, version=promoted.version, action=promoted.action)
        return JSONResponse({**promoted.model_dump(mode="json"), "event_id": event.event_id})

    async def rollback(request: Request) -> JSONResponse:
        if (denied := authorized(request)) is not None:
            return denied
        return await command(request, PREVIOUS, "rollback requested over HTTP")

    async def promote(request: Request) -> JSONResponse:
        if (denied := authorized(request)) is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            body = None
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, str | int) or not str(version).isdigit():
            return JSONResponse({"error": 'body must be {"version": "<number>"}', "field": "version"}, 422)
        return await command(request, str(version), "promotion requested over HTTP")

    async def describe(request: Request) -> JSONResponse:
        name = request.path_params["name"]

        def aliases() -> dict[str, Any]:
            found = {}
            for alias in (CHAMPION, PREVIOUS):
                version = alias_version(client(), name, alias)
                found[alias] = (
                    {"version": version.version, "run_id": version.run_id, "tags": version.tags}
                    if version
                    else None
                )
            return found

        return JSONResponse({"model_name": name, **await asyncio.to_thread(aliases)})

    runtime.bus.consume(events.MODEL_TRAINED, on_model_trained)
    runtime.require_http("mlflow", f"{settings.effective_mlflow_uri}/health")
    return runtime.asgi(
        [
            Route("/models/{name}", describe, methods=["GET"]),
            Route("/models/{name}/rollback", rollback, methods=["POST"]),
            Route("/models/{name}/promote", promote, methods=["POST"]),
        ]
    )
