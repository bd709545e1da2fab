"""The registry's HTTP face: describe a model's aliases; promote a version or roll back (bearer token)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from starlette.responses import JSONResponse

from services.registry.aliases import aliases_lock, described_aliases, move_champion
from services.registry.auth import authorized
from services.registry.deps import RegistryDeps
from services.registry.metrics import PROMOTIONS
from services.registry.schemas import ChampionMoved, ModelAliases, PromoteRequest
from shared import events
from shared.ml.modeling import PREVIOUS
from shared.runtime.service import ErrorBody, JsonBody, provide

router = APIRouter(tags=["models"])

Deps = Annotated[RegistryDeps, Depends(provide(RegistryDeps))]
ModelName = Annotated[str, Path(description="a registered model's name", examples=["churn-demo"])]
COMMAND: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorBody,
        "description": "no bearer token, or not the registry's (`field`: `authorization`)",
    },
    403: {"model": ErrorBody, "description": "commands are off: no `MESH_REGISTRY_TOKEN` is configured"},
}


@router.get("/models/{name}", summary="A model's champion and previous version", response_model=ModelAliases)
async def describe(name: ModelName, deps: Deps) -> Any:
    """The version, run and tags each alias (`champion`, `previous`) points at; null where it is unset."""
    return {"model_name": name, **await asyncio.to_thread(described_aliases, deps.mlflow, name)}


@router.post(
    "/models/{name}/rollback",
    summary="Roll back to the previous version",
    dependencies=[Depends(authorized)],
    response_model=ChampionMoved,
    responses={
        **COMMAND,
        404: {"model": ErrorBody, "description": "the model has no previous version (`field`: `version`)"},
    },
)
async def rollback(name: ModelName, deps: Deps) -> Any:
    """The champion goes back to the previous version (and the old champion becomes previous)."""
    return await move_and_announce(deps, name, PREVIOUS, "rollback requested over HTTP")


@router.post(
    "/models/{name}/promote",
    summary="Make a version the champion",
    dependencies=[Depends(authorized)],
    response_model=ChampionMoved,
    responses={
        **COMMAND,
        404: {"model": ErrorBody, "description": "the model has no such version (`field`: `version`)"},
    },
)
async def promote(
    name: ModelName, deps: Deps, body: Annotated[PromoteRequest, Depends(JsonBody(PromoteRequest))]
) -> Any:
    """With `{"version": "<number>"}`: that version becomes the champion, the current one previous."""
    return await move_and_announce(deps, name, body.version, "promotion requested over HTTP")


async def move_and_announce(
    deps: RegistryDeps, name: str, target: str, reason: str
) -> JSONResponse | ChampionMoved:
    """Move the champion to ``target`` under the model's lock and announce it on ``model.promoted``."""
    async with aliases_lock(deps.bus.redis, name, timeout=60, blocking_timeout=60):
        try:
            promoted = await asyncio.to_thread(move_champion, deps.mlflow, name, target, reason)
        except LookupError as exc:
            return JSONResponse({"error": str(exc), "field": "version"}, status_code=404)
    event = await deps.bus.emit(events.MODEL_PROMOTED, promoted)
    PROMOTIONS.labels(name, promoted.action).inc()
    deps.log.info("champion moved", model=name, version=promoted.version, action=promoted.action)
    return ChampionMoved(**promoted.model_dump(), event_id=event.event_id)
