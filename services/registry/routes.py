"""The registry's HTTP face: describe a model's aliases; promote a version or roll back (bearer token)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse

from services.registry.aliases import aliases_lock, described_aliases, move_champion
from services.registry.auth import refusal
from services.registry.deps import RegistryDeps
from services.registry.metrics import PROMOTIONS
from shared import events
from shared.ml.modeling import PREVIOUS
from shared.runtime.service import deps_of


async def describe(request: Request) -> JSONResponse:
    """GET /models/{name}: the version each alias points at."""
    deps = deps_of(request, RegistryDeps)
    name = request.path_params["name"]
    return JSONResponse({"model_name": name, **await asyncio.to_thread(described_aliases, deps.mlflow, name)})


async def rollback(request: Request) -> JSONResponse:
    """POST /models/{name}/rollback: the champion goes back to the previous version."""
    deps = deps_of(request, RegistryDeps)
    if (refused := refusal(request, deps.settings.registry_token)) is not None:
        return refused
    return await move_and_announce(
        deps, request.path_params["name"], PREVIOUS, "rollback requested over HTTP"
    )


async def promote(request: Request) -> JSONResponse:
    """POST /models/{name}/promote with ``{"version": "<number>"}``: that version becomes the champion."""
    deps = deps_of(request, RegistryDeps)
    if (refused := refusal(request, deps.settings.registry_token)) is not None:
        return refused
    try:
        body = await request.json()
    except ValueError:
        body = None
    version = body.get("version") if isinstance(body, dict) else None
    if not isinstance(version, str | int) or not str(version).isdigit():
        return JSONResponse({"error": 'body must be {"version": "<number>"}', "field": "version"}, 422)
    return await move_and_announce(
        deps, request.path_params["name"], str(version), "promotion requested over HTTP"
    )


async def move_and_announce(deps: RegistryDeps, name: str, target: str, reason: str) -> JSONResponse:
    """Move the champion to ``target`` under the model's lock and announce it on ``model.promoted``."""
    async with aliases_lock(deps.bus.redis, name, timeout=60, blocking_timeout=60):
        try:
            promoted = await asyncio.to_thread(move_champion, deps.mlflow, name, target, reason)
        except LookupError as exc:
            return JSONResponse({"error": str(exc), "field": "version"}, status_code=404)
    event = await deps.bus.emit(events.MODEL_PROMOTED, promoted)
    PROMOTIONS.labels(name, promoted.action).inc()
    deps.log.info("champion moved", model=name, version=promoted.version, action=promoted.action)
    return JSONResponse({**promoted.model_dump(mode="json"), "event_id": event.event_id})
