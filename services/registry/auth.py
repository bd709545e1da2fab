"""Who may run the registry's commands: a caller presenting the configured bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import Request
from starlette.responses import JSONResponse

from services.registry.deps import RegistryDeps
from shared.runtime.auth import wrong_bearer
from shared.runtime.service import Refusal, provide

# How the OpenAPI says it; the checking is :func:`refusal`'s, which keeps its own answers (401 and 403).
bearer = HTTPBearer(
    scheme_name="registryToken",
    description="`MESH_REGISTRY_TOKEN` (the local stack keeps one in `.mesh/registry-token`)",
    auto_error=False,
)


def refusal(request: Request, token: str | None) -> JSONResponse | None:
    """The response refusing ``request`` a command, or None when it carries ``token`` as its bearer token.

    With no token configured commands are off (403) rather than open to anyone; the comparison takes the
    same time whatever the given token shares with the real one.
    """
    if not token:
        return JSONResponse(
            {"error": "commands are disabled: set MESH_REGISTRY_TOKEN", "field": "authorization"},
            status_code=403,
        )
    return wrong_bearer(request.headers.get("authorization"), token)


async def authorized(
    request: Request,
    deps: Annotated[RegistryDeps, Depends(provide(RegistryDeps))],
    _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> None:
    """A route dependency: the command goes on only for the bearer of the registry's token. Declared
    before the route's body, it refuses before the body is read."""
    if (refused := refusal(request, deps.settings.registry_token)) is not None:
        raise Refusal(refused)
