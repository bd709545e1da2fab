"""Property tests of every HTTP API from its own OpenAPI document (schemathesis): requests generated to fit
each operation's schema, and to break it, are sent to the real apps on a real Redis-compatible server (and
the registry on a real MLflow). Whatever comes, no answer is a server error, every answer is one the
operation declares and fits its declared schema, and every 4xx names the field to blame."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from shared.ml.modeling import load_model_config
from shared.ops.demo_data import generate
from shared.runtime.mlflow_client import mlflow_client
from shared.runtime.retry import wait_until
from shared.runtime.settings import MeshSettings
from tests.support.champions import promote_and_announce, train_versions
from tests.support.data import demo_csv
from tests.support.servers import mesh
from tests.support.serving import ServingServer, demo_only_config, serving_env

pytestmark = pytest.mark.integration

SERVICES = ("ingest", "registry", "monitor")
TOKEN = "api-properties-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
# Small enough that the file runs in well under two minutes on two busy cores, and still reaches every
# route's refusals: each operation is tried in both modes, with generated and with known names.
MAX_EXAMPLES = 25
# A name each service knows, so that generated requests also reach past the 404 of an unknown one.
KNOWN = {"name": "demo", "model": "churn-demo"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture
def api_settings(settings: MeshSettings, mlflow_uri: str) -> MeshSettings:
    # One token for both planes: every secured route is tried with it and without it.
    return settings.model_copy(
        update={"registry_token": TOKEN, "api_token": TOKEN, "mlflow_tracking_uri": mlflow_uri}
    )


@pytest.fixture
async def urls(api_settings: MeshSettings) -> AsyncIterator[dict[str, str]]:
    async with mesh(api_settings, SERVICES) as urls:
        yield urls


def names_the_field(response: Any) -> None:
    """A 4xx says what to fix: ``field`` names it, and an ``error`` built from several says which first."""
    if not 400 <= response.status_code < 500:
        return
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("field"), str) and body["field"], (
        response.status_code,
        response.text,
    )
    if "errors" in body:
        assert body["error"].startswith(f"{body['field']}: "), body
        assert body["errors"][0]["field"] == body["field"], body


def secured(operation: schemathesis.APIOperation) -> bool:
    """A registry command (the registry's token) or a data-plane route (the API token, set here)."""
    schemes = {name for requirement in operation.definition.raw.get("security", []) for name in requirement}
    return bool(schemes & {"registryToken", "apiToken"})


def holds(
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    base_url: str,
    headers: dict[str, str],
    path_parameters: dict[str, str],
    checks: list[Any] = CHECKS,
) -> bool:
    """Run ``operation``'s property in this (worker) thread, the apps answering from the test's event loop;
    False when no request breaking the operation's schema can be made (nothing in it is constrained)."""
    known = {k: v for k, v in path_parameters.items() if k in operation.path_parameters}

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode, path_parameters=known or None))
    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        if secured(operation) and headers != AUTH:
            # Without the token a command is refused before anything else is read.
            assert response.status_code == 401, (response.status_code, response.text)
            assert response.json()["field"] == "authorization"
        case.validate_response(response, checks=checks, headers=headers)
        names_the_field(response)

    try:
        check()
    except hypothesis.errors.Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        return False
    return True


async def test_generated_requests_never_get_a_server_error_and_every_refusal_names_the_field(
    urls: dict[str, str],
) -> None:
    tried, unbreakable = set(), set()
    for service in SERVICES:
        url = urls[service]
        schema = await asyncio.to_thread(schemathesis.openapi.from_url, f"{url}/openapi.json", timeout=30)
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in GenerationMode:
                for path_parameters in ({}, KNOWN):
                    for headers in (AUTH, {}) if secured(operation) else ({},):
                        if not await asyncio.to_thread(holds, operation, mode, url, headers, path_parameters):
                            unbreakable.add((service, operation.label, bool(path_parameters)))
            tried.add((service, operation.label))
    # Every route of every service, the registry's commands among them.
    assert ("registry", "POST /models/{name}/promote") in tried and len(tried) >= 18, sorted(tried)
    # Requests breaking the schema were made wherever it constrains something: bodies, dataset names.
    must_break = {
        ("ingest", "POST /datasets/{name}/batches", False),
        ("ingest", "GET /datasets/{name}/snapshots", False),
        ("monitor", "POST /labels", False),
        ("registry", "POST /models/{name}/promote", True),
    }
    assert not must_break & unbreakable, sorted(unbreakable)


async def test_commands_without_the_token_are_refused_whatever_the_body(urls: dict[str, str]) -> None:
    """The registry's commands, generated bodies and all, answer 401 naming `authorization` without the
    token, and 401 with a token that is not the registry's."""
    schema = await asyncio.to_thread(
        schemathesis.openapi.from_url, f"{urls['registry']}/openapi.json", timeout=30
    )
    commands = [r.ok() for r in schema.get_all_operations() if secured(r.ok())]
    assert {c.label for c in commands} == {"POST /models/{name}/rollback", "POST /models/{name}/promote"}
    for operation in commands:
        for headers in ({}, {"authorization": "Bearer not-the-token"}, {"authorization": f"Basic {TOKEN}"}):
            await asyncio.to_thread(
                holds, operation, GenerationMode.POSITIVE, urls["registry"], headers, KNOWN
            )


async def test_a_known_dataset_upload_fits_its_declared_answer(urls: dict[str, str]) -> None:
    """The generated bodies above are mostly refused; an accepted one answers as declared too."""
    schema = await asyncio.to_thread(schemathesis.openapi.from_url, f"{urls['ingest']}/openapi.json")
    operation = schema["/datasets/{name}/batches"]["POST"]
    case = operation.Case(path_parameters={"name": "demo"}, body=demo_csv(5), media_type="text/csv")
    response = await asyncio.to_thread(case.call, base_url=urls["ingest"], headers=AUTH, timeout=30)
    assert response.status_code == 201, response.text
    case.validate_response(response, checks=CHECKS, headers=AUTH)


# --- serving (BentoML), as compose runs it, serving a champion of its own -----------------------------

# BentoML writes serving's document itself: the same status codes (400, 404, 500) and error shape for every
# API, whatever it answers, so only what holds whatever the document says is checked there.
SERVING_CHECKS = [not_a_server_error, negative_data_rejection]
SERVED = f"churn-props-{uuid.uuid4().hex[:6]}"  # its own name: the session's MLflow is shared


@pytest.fixture(scope="module")
def serving_url(redis_port: int, mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mesh run serving`` on deploy/config's demo model (renamed), its champion trained and promoted
    while the server boots."""
    root = tmp_path_factory.mktemp("serving-properties")
    config_dir = demo_only_config(root, SERVED)
    settings = MeshSettings(
        redis_port=redis_port, mlflow_tracking_uri=mlflow_uri, state_dir=root / "state", config_dir=config_dir
    )
    server = ServingServer(root / "server", serving_env(settings)).start()
    try:
        client = mlflow_client(settings)
        config = load_model_config(config_dir, "demo")
        [trained] = train_versions(client, config_dir, root / "data", [(config, generate(rows=400, seed=1))])
        promote_and_announce(settings, client, trained)
        wait_until(server.alive, timeout=120, what="the serving server")
        wait_until(
            lambda: httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200,
            timeout=120,
            what=f"{SERVED} served ({server.log_tail(500)})",
        )
        yield server.url
    finally:
        server.stop()


def test_serving_documents_each_models_record_with_its_types_ranges_and_categories(serving_url: str) -> None:
    """BentoML's /docs.json knows no model; /openapi.json and /models/{name}/openapi.json type the bodies."""
    spec = httpx.get(f"{serving_url}/models/{SERVED}/openapi.json", timeout=30).json()
    schemas = spec["components"]["schemas"]
    [record_key] = [key for key in schemas if key.endswith("Record")]
    record = schemas[record_key]
    assert record["additionalProperties"] is False and "age" in record["required"]
    assert record["properties"]["age"] == {
        "maximum": 100.0,
        "minimum": 18.0,
        "title": "Age",
        "type": "integer",
    }
    assert record["properties"]["region"]["enum"] == ["north", "south", "east", "west"]
    one = schemas["predict__Input"]
    assert one["properties"]["features"]["$ref"] == f"#/components/schemas/{record_key}"
    assert one["properties"]["model"]["enum"] == [SERVED] and one["required"] == ["features"]
    assert schemas["predict_batch__Input"]["properties"]["records"]["items"] == {
        "$ref": f"#/components/schemas/{record_key}"
    }
    assert httpx.get(f"{serving_url}/openapi.json", timeout=30).json()["components"]["schemas"][record_key]
    unknown = httpx.get(f"{serving_url}/models/not-declared/openapi.json", timeout=30)
    assert unknown.status_code == 404 and unknown.json()["field"] == "model"


def test_serving_answers_generated_requests_without_a_server_error_naming_every_refused_field(
    serving_url: str,
) -> None:
    # The typed document: valid requests are real predictions, broken ones break a record's declared rules.
    schema = schemathesis.openapi.from_url(f"{serving_url}/openapi.json", timeout=30)
    tried = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in GenerationMode:
            holds(operation, mode, serving_url, {}, {}, SERVING_CHECKS)
        tried.add(operation.label)
    # Its own routes beside BentoML's (/models, /v2/...) are mounted Starlette routes the document omits.
    assert {"POST /predict", "POST /predict_batch"} <= tried, sorted(tried)
