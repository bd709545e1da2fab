"""Who may run the registry's commands: only a caller with the configured bearer token, and nobody when no
token is configured."""

from __future__ import annotations

import json

import pytest
from starlette.requests import Request

from services.registry.auth import refusal

TOKEN = "s3cret-token"


def request(authorization: str | None) -> Request:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    return Request({"type": "http", "method": "POST", "path": "/models/m/rollback", "headers": headers})


def test_the_configured_bearer_token_is_let_through() -> None:
    assert refusal(request(f"Bearer {TOKEN}"), TOKEN) is None


@pytest.mark.parametrize("token", [None, ""])
def test_without_a_configured_token_every_command_is_forbidden(token: str | None) -> None:
    for authorization in (None, "Bearer ", f"Bearer {TOKEN}"):
        refused = refusal(request(authorization), token)
        assert refused is not None and refused.status_code == 403
        body = json.loads(bytes(refused.body))
        assert body["field"] == "authorization" and "MESH_REGISTRY_TOKEN" in body["error"]


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer ", "Bearer wrong", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}x"],
)
def test_a_missing_or_wrong_token_is_unauthorized(authorization: str | None) -> None:
    refused = refusal(request(authorization), TOKEN)
    assert refused is not None and refused.status_code == 401
    assert json.loads(bytes(refused.body))["field"] == "authorization"
