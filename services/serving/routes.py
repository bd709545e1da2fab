"""The serving service's HTTP endpoint beside BentoML's: ``GET /model``, what is serving.

BentoML answers ``/healthz``, ``/livez``, ``/readyz`` and ``/metrics`` itself, ahead of mounted routes.
This one is mounted on BentoML's server (``bentoml.asgi_app``), declared with the service class before
any instance exists, so it finds the worker's deps through BentoML's current service.
"""

from __future__ import annotations

import bentoml
from starlette.requests import Request
from starlette.responses import JSONResponse

from services.serving.deps import ServingDeps


async def model_info(_: Request) -> JSONResponse:
    """GET /model: the served version's provenance, or 503 while none is serving."""
    deps: ServingDeps = bentoml.get_current_service().deps
    loaded = deps.holder.current
    if loaded is None:
        return JSONResponse({"error": "no model is serving yet", "model": deps.holder.name}, status_code=503)
    return JSONResponse(loaded.describe(), headers=loaded.headers)
