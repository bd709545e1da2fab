"""Serving's answers when the model a request asks for cannot answer it: not named, not declared, or not
in memory (yet). Each names the model, or the ``model`` field, and lists the models served. And the
refusals BentoML makes itself, of a body that does not fit an API's arguments, put in the same shape."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.serving.catalog import ModelLookupError, ModelNotNamed, ModelUnavailable, UnknownModel
from shared.runtime.service import FieldError, InvalidRequest, dotted

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


def bentoml_refusal(body: bytes) -> JSONResponse:
    """BentoML's 400 for a body its API's arguments refused, as the mesh says it: 422 naming every field
    pydantic named (``features``, ``records[1]``), or 400 naming ``body`` when it was not even read."""
    try:
        said: Any = json.loads(body)
    except ValueError:
        said = None
    # Pydantic's errors under `detail`; anything else (BentoML answers a body that is not JSON with a list
    # holding one `{"error": ...}`) leaves the body as a whole to blame.
    detail = said.get("detail") if isinstance(said, dict) else None
    if isinstance(detail, list) and detail and all(isinstance(e, dict) for e in detail):
        errors = [
            FieldError(
                field=dotted(e.get("loc", ())), error=str(e.get("msg", "")), type=str(e.get("type", ""))
            )
            for e in detail
        ]
        status = 422
    else:
        said = said[0] if isinstance(said, list) and said else said
        message = said.get("error") if isinstance(said, dict) else None
        errors = [FieldError(field="body", error=str(message or "not a valid request body"), type="invalid")]
        status = 400
    first = errors[0]
    refused = InvalidRequest(error=f"{first.field}: {first.error}", field=first.field, errors=errors)
    return JSONResponse(refused.model_dump(), status_code=status)


class NamedRefusals:
    """ASGI middleware: BentoML's own 400s on ``paths`` (its APIs') answered as :func:`bentoml_refusal`;
    every other response passes as it is."""

    def __init__(self, app: ASGIApp, paths: frozenset[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        held: list[Message] = []  # a 400's start and body, until the body is whole

        async def rewrite(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 400:
                held.append(message)
            elif held:
                held.append(message)
                if not message.get("more_body"):
                    body = b"".join(m.get("body", b"") for m in held[1:])
                    await bentoml_refusal(body)(scope, receive, send)
            else:
                await send(message)

        await self.app(scope, receive, rewrite)


# The routes that answer predictions, as regular expressions of their paths.
PREDICTION_ROUTES = ("/predict", "/predict_batch", "/v2/models/[^/]+(?:/versions/[^/]+)?/infer")
_PREDICTION_PATH = re.compile(f"^(?:{'|'.join(PREDICTION_ROUTES)})$")
# The same routes as OpenTelemetry's URL exclusions (searched in the whole URL, scheme and host first).
PREDICTION_URLS = [f"://[^/]+{route}$" for route in PREDICTION_ROUTES]


def is_prediction_path(path: str) -> bool:
    """The routes that answer predictions: the mesh's APIs and the Open Inference Protocol's ``infer``."""
    return _PREDICTION_PATH.match(path) is not None
