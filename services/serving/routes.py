"""The serving service's HTTP endpoints beside BentoML's: what is serving.

``GET /models`` lists every served model, ``GET /models/{name}`` shows one, and ``GET /model`` the only
one when exactly one is served (409 listing them when several are). BentoML answers ``/healthz``,
``/livez``, ``/readyz`` and ``/metrics`` itself, ahead of mounted routes. These are mounted on BentoML's
server (``bentoml.asgi_app``), declared with the service class before any instance exists, so they find
the worker's deps through BentoML's current service.
"""

from __future__ import annotations

import bentoml
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.serving.catalog import ModelNotNamed, UnknownModel
from services.serving.deps import ServingDeps
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


async def model_detail(request: Request) -> JSONResponse:
    """GET /models/{name}: one served model; with its snapshots, load time and inputs when loaded."""
    deps = _deps()
    name = request.path_params["name"]
    try:
        holder = await deps.models.holder(name)
    except UnknownModel as exc:
        return refusal(exc, deps.worker_header)
    if not holder.served:
        served = deps.models.served_names()
        body = {"error": f"no version of {name} is served", "model": name, "served": served}
        return JSONResponse(body, status_code=404, headers=deps.worker_header)
    loaded = holder.current
    body = {**deps.models.status(holder), **(loaded.describe() if loaded is not None else {})}
    headers = {**(loaded.headers if loaded is not None else {}), **deps.worker_header}
    return JSONResponse(body, headers=headers)


ROUTES = [
    Route("/model", model_info),
    Route("/models", models_list),
    Route("/models/{name}", model_detail),
]
