"""Who may run the registry's commands: a caller presenting the configured bearer token."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse


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
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        return JSONResponse(
            {"error": "missing or wrong bearer token", "field": "authorization"}, status_code=401
        )
    return None
