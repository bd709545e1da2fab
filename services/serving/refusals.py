"""Serving's answers when the model a request asks for cannot answer it: not named, not declared, or not
in memory (yet). Each names the model, or the ``model`` field, and lists the models served."""

from __future__ import annotations

from starlette.responses import JSONResponse

from services.serving.catalog import ModelLookupError, ModelNotNamed, ModelUnavailable, UnknownModel

RETRY_LOADING_S = 1  # a load takes seconds: Retry-After for a model on its way into memory
RETRY_UNPROMOTED_S = 5  # Retry-After for a declared model no version of which is promoted yet


def refusal(exc: ModelLookupError, headers: dict[str, str]) -> JSONResponse:
    """422 for a request that must name its model, 404 for a model not declared, 503 (with Retry-After)
    for one not in memory."""
    body = {"error": str(exc), "model": exc.model, "served": exc.served}
    if isinstance(exc, ModelNotNamed):
        return JSONResponse({**body, "field": "model"}, status_code=422, headers=headers)
    if isinstance(exc, UnknownModel):
        return JSONResponse({**body, "field": "model"}, status_code=404, headers=headers)
    if isinstance(exc, ModelUnavailable):
        retry = RETRY_LOADING_S if exc.loading else RETRY_UNPROMOTED_S
        return JSONResponse(
            {**body, "loading": exc.loading},
            status_code=503,
            headers={**headers, "Retry-After": str(retry)},
        )
    raise TypeError(f"no refusal for {type(exc).__name__}")  # pragma: no cover
