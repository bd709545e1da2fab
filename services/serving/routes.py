"""The serving service's HTTP endpoints beside BentoML's: what is serving.

``GET /models`` lists every served model, ``GET /models/{name}`` shows one, and ``GET /model`` the only
one when exactly one is served (409 listing them when several are). ``GET /openapi.json`` and
``GET /models/{name}/openapi.json`` are the service's OpenAPI document typed for the declared models.
BentoML answers ``/healthz``, ``/livez``, ``/readyz`` and ``/metrics`` itself, ahead of mounted routes.
These are mounted on BentoML's server (``bentoml.asgi_app``), declared with the service class before any
instance exists, so they find the worker's deps through BentoML's current service.
"""

from __future__ import annotations

from typing import Any

import bentoml
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.serving.catalog import ModelNotNamed, UnknownModel
from services.serving.deps import ServingDeps
from services.serving.holder import ModelHolder
from services.serving.openapi import declared_record, typed_spec
from services.serving.refusals import refusal


def _deps() -> ServingDeps:
    deps: ServingDeps = bentoml.get_current_service().deps
    return deps


async def model_info(_: Request) -> JSONResponse:
    """GET /model: the one served model's provenance; 503 while none is serving, 409 when several are."""
    deps = _deps()
    declared = list(deps.models.holders)
    try:
        holder = deps.models.default()
    except ModelNotNamed as exc:
        if not exc.served:
            body = {"error": "no model is serving yet", "model": None, "declared": declared}
            return JSONResponse(body, status_code=503, headers=deps.worker_header)
        body = {
            "error": f"{len(exc.served)} models are served: ask GET /models/{{name}} for one",
            "served": exc.served,
        }
        return JSONResponse(body, status_code=409, headers=deps.worker_header)
    loaded = holder.current
    if loaded is None:
        body = {"error": "no model is serving yet", "model": holder.name, "declared": declared}
        return JSONResponse(body, status_code=503, headers=deps.worker_header)
    return JSONResponse(loaded.describe(), headers={**loaded.headers, **deps.worker_header})


async def models_list(_: Request) -> JSONResponse:
    """GET /models: each served model with its version, provenance and whether it is in memory."""
    deps = _deps()
    body = {
        "models": [deps.models.status(holder) for holder in deps.models.served],
        "declared": list(deps.models.holders),
        "max_loaded": deps.models.max_loaded,
        "worker": deps.worker,
    }
    return JSONResponse(body, headers=deps.worker_header)


async def _named(request: Request) -> tuple[ServingDeps, ModelHolder | JSONResponse]:
    """The worker's deps and the holder of the model the path names, or the 404 naming it."""
    deps = _deps()
    try:
        return deps, await deps.models.holder(request.path_params["name"])
    except UnknownModel as exc:
        return deps, refusal(exc, deps.worker_header)


async def model_detail(request: Request) -> JSONResponse:
    """GET /models/{name}: one served model; with its snapshots, load time and inputs when loaded."""
    deps, holder = await _named(request)
    if isinstance(holder, JSONResponse):
        return holder
    name = holder.name
    if not holder.served:
        served = deps.models.served_names()
        body = {"error": f"no version of {name} is served", "model": name, "served": served}
        return JSONResponse(body, status_code=404, headers=deps.worker_header)
    loaded = holder.current
    body = {**deps.models.status(holder), **(loaded.describe() if loaded is not None else {})}
    headers = {**(loaded.headers if loaded is not None else {}), **deps.worker_header}
    return JSONResponse(body, headers=headers)


async def openapi_document(_: Request) -> JSONResponse:
    """GET /openapi.json: BentoML's document typed for every declared model (services.serving.openapi)."""
    deps = _deps()
    records = {name: _record(deps, holder) for name, holder in deps.models.holders.items()}
    return JSONResponse(typed_spec(_bentoml_document(), records), headers=deps.worker_header)


async def model_openapi_document(request: Request) -> JSONResponse:
    """GET /models/{name}/openapi.json: the document for asking this model alone."""
    deps, holder = await _named(request)
    if isinstance(holder, JSONResponse):
        return holder
    document = typed_spec(_bentoml_document(), {holder.name: _record(deps, holder)})
    return JSONResponse(document, headers=deps.worker_header)


def _record(deps: ServingDeps, holder: ModelHolder) -> type[BaseModel]:
    """The record requests are validated against: the served version's, else the declared one."""
    loaded = holder.current
    return loaded.record if loaded is not None else declared_record(holder.config, deps.settings.config_dir)


def _bentoml_document() -> dict[str, Any]:
    from services.serving.app import SERVICE  # the service these routes are mounted on (imported after it)

    spec: dict[str, Any] = SERVICE.openapi_spec.asdict()
    return spec


ROUTES = [
    Route("/model", model_info),
    Route("/models", models_list),
    Route("/models/{name}", model_detail),
    Route("/models/{name}/openapi.json", model_openapi_document),
    Route("/openapi.json", openapi_document),
]
