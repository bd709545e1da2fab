"""Bearer tokens. The registry's commands always need ``MESH_REGISTRY_TOKEN``; the data plane (uploads to
ingest, labels to the monitor, predictions from serving) needs ``MESH_API_TOKEN`` when it is set, for a
mesh reachable beyond a trusted network. Probes, metrics and API documents stay open: orchestrators and
Prometheus read them without credentials."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.runtime.service import ErrorBody, Refusal
from shared.runtime.settings import MeshSettings

# How the OpenAPI says it; the checking is :func:`wrong_bearer`'s, which answers in the mesh's shape.
api_bearer = HTTPBearer(
    scheme_name="apiToken",
    description="`MESH_API_TOKEN`, when the mesh is configured with one (otherwise no token is needed)",
    auto_error=False,
)


API_TOKEN_REFUSED: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorBody,
        "description": "`MESH_API_TOKEN` is set, and this is not its bearer (`field`: `authorization`)",
    }
}


def bearer_header(token: str | None) -> dict[str, str]:
    """The header a client sends ``token`` in; none without a token."""
    return {"authorization": f"Bearer {token}"} if token else {}


def wrong_bearer(authorization: str | None, token: str) -> JSONResponse | None:
    """A 401 naming the field unless ``authorization`` carries ``token`` as its bearer token; the
    comparison takes the same time whatever the given token shares with the real one."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return JSONResponse(
            {"error": "missing or wrong bearer token", "field": "authorization"},
            status_code=401,
            headers={"www-authenticate": "Bearer"},
        )
    return None


async def api_token_required(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(api_bearer)]
) -> None:
    """A route dependency of the data plane: with ``MESH_API_TOKEN`` set, only its bearer goes on.
    Declared before the route's body, it refuses before the body is read."""

    settings: MeshSettings = request.app.state.deps.settings
    if settings.api_token and (
        refused := wrong_bearer(request.headers.get("authorization"), settings.api_token)
    ):
        raise Refusal(refused)


class ApiTokenGuard:
    """The same rule as ASGI middleware, for an app whose routes take no FastAPI dependencies (serving's
    BentoML APIs and its mounted routes): requests whose path ``guarded`` accepts need the token."""

    def __init__(self, app: ASGIApp, token: str | None, guarded: Callable[[str], bool]) -> None:
        self.app, self.token, self.guarded = app, token, guarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token and scope["type"] == "http" and self.guarded(scope["path"]):
            headers = dict(scope["headers"])
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            if (refused := wrong_bearer(authorization, self.token)) is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)
