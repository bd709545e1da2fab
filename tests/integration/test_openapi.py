"""Each HTTP service (ingest, registry, monitor) declares its API, run as the real app on a real
Redis-compatible server: ``/openapi.json`` is a well-formed OpenAPI 3 document naming every route the
service serves with its request and response schemas, ``/docs`` is served, what the services answer fits
what they declare, and hostile bodies are refused with 4xx naming the field, never 5xx."""

from __future__ import annotations

import importlib
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi.routing import APIRoute

from shared.runtime.settings import MeshSettings
from tests.support.data import demo_csv
from tests.support.servers import mesh

pytestmark = pytest.mark.integration

SERVICES = ("ingest", "registry", "monitor")
TOKEN = "openapi-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
JSON = {"content-type": "application/json"}
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
PROBES = {("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics")}
ROUTES = {
    "ingest": {("post", "/datasets/{name}/batches"), ("get", "/datasets/{name}/snapshots")},
    "registry": {
        ("get", "/models/{name}"),
        ("post", "/models/{name}/rollback"),
        ("post", "/models/{name}/promote"),
    },
    "monitor": {
        ("get", "/drift"),
        ("get", "/drift/{model}"),
        ("get", "/drift/{model}/report"),
        ("post", "/labels"),
    },
}


@pytest.fixture
def api_settings(settings: MeshSettings) -> MeshSettings:
    return settings.model_copy(update={"registry_token": TOKEN})


@pytest.fixture
async def urls(api_settings: MeshSettings) -> AsyncIterator[dict[str, str]]:
    async with mesh(api_settings, SERVICES) as urls:
        yield urls


async def openapi_of(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await http.get(f"{url}/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    document: dict[str, Any] = response.json()
    return document


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method, path, operation


def declared(document: dict[str, Any], method: str, path: str, status: int, media: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["paths"][path][method]["responses"][str(status)]["content"][media][
        "schema"
    ]
    return schema


def fits(document: dict[str, Any], schema: dict[str, Any], instance: Any) -> None:
    """``instance`` is valid against ``schema``, its ``#/components/...`` references resolved in the
    document (OpenAPI 3.1 schemas are JSON Schema 2020-12)."""
    jsonschema.Draft202012Validator({**schema, "components": document.get("components", {})}).validate(
        instance
    )


def answers_as_declared(document: dict[str, Any], method: str, path: str, response: httpx.Response) -> None:
    fits(
        document, declared(document, method, path, response.status_code, "application/json"), response.json()
    )


def check_openapi_3(document: dict[str, Any], service: str) -> None:
    """The structure of an OpenAPI 3 document, checked by hand (openapi-spec-validator is not installed)."""
    assert re.fullmatch(r"3\.\d+\.\d+", document["openapi"]), document["openapi"]
    info = document["info"]
    assert info["title"] == f"retrain-mesh {service}"
    assert info["version"] and info["description"].strip()
    schemas = document.get("components", {}).get("schemas", {})
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    schemes = document.get("components", {}).get("securitySchemes", {})
    operation_ids = []
    for method, path, operation in operations(document):
        where = f"{method.upper()} {path}"
        assert path.startswith("/"), where
        operation_ids.append(operation["operationId"])
        assert operation.get("summary") and operation.get("description"), where
        in_path = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert in_path == set(re.findall(r"{(\w+)}", path)), where
        assert all(p["required"] for p in operation.get("parameters", []) if p["in"] == "path"), where
        responses = operation["responses"]
        assert responses and any(status.startswith("2") for status in responses), where
        for status, response in responses.items():
            assert re.fullmatch(r"[1-5]\d\d", status) and response["description"], (where, status)
            for media, content in response.get("content", {}).items():
                assert "schema" in content, (where, status, media)
        if "requestBody" in operation:
            assert operation["requestBody"]["content"], where
        for requirement in operation.get("security", []):
            assert set(requirement) <= set(schemes), where
    assert len(operation_ids) == len(set(operation_ids)), operation_ids
    for ref in refs(document):
        assert ref.startswith("#/components/schemas/") and ref.split("/")[-1] in schemas, ref
    for ref_name in ("HTTPValidationError", "ValidationError"):  # FastAPI's shape, not the mesh's
        assert ref_name not in schemas


async def test_each_service_serves_a_valid_openapi_document_naming_every_route(
    urls: dict[str, str], api_settings: MeshSettings
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        for service in SERVICES:
            document = await openapi_of(http, urls[service])
            check_openapi_3(document, service)
            documented = {(method, path) for method, path, _ in operations(document)}
            assert documented == ROUTES[service] | PROBES, service
            # Every route the app serves, beyond the docs themselves and HEAD twins of its GET routes.
            app = importlib.import_module(f"services.{service}.app").create_app(api_settings)
            served = {
                (method.lower(), route.path)
                for route in app.routes
                if isinstance(route, APIRoute)
                for method in route.methods or ()
                if method != "HEAD"
            }
            assert served == documented, service

            docs = await http.get(f"{urls[service]}/docs")
            assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
            assert "swagger-ui" in docs.text and "/openapi.json" in docs.text
            # The old routes answer HEAD as Starlette's did.
            assert (await http.head(f"{urls[service]}/healthz")).status_code == 200


def component(document: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = document["components"]["schemas"][ref["$ref"].split("/")[-1]]
    return schema


async def test_request_and_response_schemas_are_declared(urls: dict[str, str]) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        ingest, registry, monitor = [await openapi_of(http, urls[s]) for s in SERVICES]

    upload = ingest["paths"]["/datasets/{name}/batches"]["post"]
    raw = upload["requestBody"]["content"]
    assert {"text/csv", "application/vnd.apache.parquet", "application/x-ndjson"} <= set(raw)
    assert all(c["schema"] == {"type": "string", "format": "binary"} for c in raw.values())
    assert {"200", "201", "404", "413", "415", "422"} <= set(upload["responses"])
    stored = component(ingest, declared(ingest, "post", "/datasets/{name}/batches", 201, "application/json"))
    assert {"duplicate", "snapshot_id", "row_count", "event_id"} <= set(stored["required"])
    rejected = declared(ingest, "post", "/datasets/{name}/batches", 422, "application/json")
    assert {r["$ref"].split("/")[-1] for r in rejected["anyOf"]} == {
        "BatchRejectedBody",
        "DatasetMisdeclaredBody",
    }

    promote = registry["paths"]["/models/{name}/promote"]["post"]
    body = component(registry, promote["requestBody"]["content"]["application/json"]["schema"])
    assert body["required"] == ["version"]
    for command in ("promote", "rollback"):
        operation = registry["paths"][f"/models/{{name}}/{command}"]["post"]
        assert operation["security"] == [{"registryToken": []}]
        assert {"200", "401", "403", "404"} <= set(operation["responses"])
        moved = component(
            registry, declared(registry, "post", f"/models/{{name}}/{command}", 200, "application/json")
        )
        assert {"version", "action", "previous_version", "event_id"} <= set(moved["properties"])
    assert registry["components"]["securitySchemes"]["registryToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": registry["components"]["securitySchemes"]["registryToken"]["description"],
    }
    assert "security" not in registry["paths"]["/models/{name}"]["get"]
    for status in ("400", "422"):
        invalid = component(registry, promote["responses"][status]["content"]["application/json"]["schema"])
        assert {"error", "field", "errors"} <= set(invalid["required"])

    labels = monitor["paths"]["/labels"]["post"]
    body = component(monitor, labels["requestBody"]["content"]["application/json"]["schema"])
    assert body["required"] == ["labels"] and body["properties"]["labels"]["minItems"] == 1
    label = component(monitor, body["properties"]["labels"]["items"])
    assert set(label["required"]) == {"request_id", "label"}
    assert "202" in labels["responses"]
    report = monitor["paths"]["/drift/{model}/report"]["get"]["responses"]
    assert set(report["200"]["content"]) == {"text/html"} and "404" in report
    one = component(monitor, declared(monitor, "get", "/drift/{model}", 200, "application/json"))
    assert {"windows", "latest", "references"} <= set(one["properties"])
    metrics = monitor["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert set(metrics) == {"text/plain"}


async def test_what_the_services_answer_fits_what_they_declare(urls: dict[str, str]) -> None:
    csv = {"content-type": "text/csv"}
    async with httpx.AsyncClient(timeout=30) as http:
        ingest, registry, monitor = [await openapi_of(http, urls[s]) for s in SERVICES]
        base = urls["ingest"]
        batches, snapshots = "/datasets/{name}/batches", "/datasets/{name}/snapshots"
        created = await http.post(f"{base}/datasets/demo/batches", content=demo_csv(5), headers=csv)
        assert created.status_code == 201, created.text
        answers_as_declared(ingest, "post", batches, created)
        again = await http.post(f"{base}/datasets/demo/batches", content=demo_csv(5), headers=csv)
        assert again.status_code == 200 and again.json()["duplicate"] is True
        answers_as_declared(ingest, "post", batches, again)
        listing = await http.get(f"{base}/datasets/demo/snapshots")
        assert listing.status_code == 200 and len(listing.json()["snapshots"]) == 1
        answers_as_declared(ingest, "get", snapshots, listing)
        bad_rows = demo_csv(5).replace(b",north,", b",mars,")
        for response in (
            await http.post(f"{base}/datasets/demo/batches", content=bad_rows, headers=csv),
            await http.post(f"{base}/datasets/nope/batches", content=b"a\n1\n", headers=csv),
            await http.post(
                f"{base}/datasets/demo/batches", content=b"%PDF", headers={"content-type": "x/y"}
            ),
            await http.get(f"{base}/datasets/nope/snapshots"),
        ):
            assert response.status_code in (404, 415, 422), response.text
            path = batches if response.request.method == "POST" else snapshots
            answers_as_declared(ingest, response.request.method.lower(), path, response)

        base = urls["monitor"]
        overview = await http.get(f"{base}/drift")
        assert "churn-demo" in overview.json()["models"]
        answers_as_declared(monitor, "get", "/drift", overview)
        for name in ("churn-demo", "nope"):
            answers_as_declared(monitor, "get", "/drift/{model}", await http.get(f"{base}/drift/{name}"))
        report = await http.get(f"{base}/drift/churn-demo/report")
        assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
        missing = await http.get(f"{base}/drift/nope/report")
        assert missing.status_code == 404 and missing.json()["field"] == "model"
        answers_as_declared(monitor, "get", "/drift/{model}/report", missing)
        accepted = await http.post(f"{base}/labels", json={"labels": [{"request_id": "r1", "label": 1}]})
        assert accepted.status_code == 202 and accepted.json() == {"accepted": 1}
        answers_as_declared(monitor, "post", "/labels", accepted)
        # `curl -d` sends form encoding; a JSON body is read as JSON whatever it is labelled.
        form = {"content-type": "application/x-www-form-urlencoded"}
        labelled = await http.post(
            f"{base}/labels", content=b'{"labels": [{"request_id": "r2", "label": 0}]}', headers=form
        )
        assert labelled.status_code == 202, labelled.text

        for service, document in zip(SERVICES, (ingest, registry, monitor), strict=True):
            alive = await http.get(f"{urls[service]}/healthz")
            answers_as_declared(document, "get", "/healthz", alive)
            ready = await http.get(f"{urls[service]}/readyz")  # 503 where MLflow is not there
            assert ready.status_code in (200, 503)
            answers_as_declared(document, "get", "/readyz", ready)
            metrics = await http.get(f"{urls[service]}/metrics")
            assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")


# Bodies a careless or hostile client sends, and the field each refusal must name.
LABELS_HOSTILE = [
    (b"", 400, "body"),
    (b"{not json", 400, "body"),
    (b"\xff\xfe\x00garbage", 400, "body"),
    (b"[]", 422, "body"),
    (b"null", 422, "body"),
    (b'"labels"', 422, "body"),
    (b"{}", 422, "labels"),
    (b'{"labels": []}', 422, "labels"),
    (b'{"labels": "r1"}', 422, "labels"),
    (b'{"labels": {"request_id": "r1", "label": 1}}', 422, "labels"),
    (b'{"labels": [1]}', 422, "labels[0]"),
    (b'{"labels": [{"label": 1}]}', 422, "labels[0].request_id"),
    (b'{"labels": [{"request_id": 7, "label": 1}]}', 422, "labels[0].request_id"),
    (b'{"labels": [{"request_id": "r1", "label": 1}, {"request_id": "r2"}]}', 422, "labels[1].label"),
    (
        b'{"labels": [{"request_id": "r1", "label": 1, "observed_at": "yesterday"}]}',
        422,
        "labels[0].observed_at",
    ),
    (b'{"labels": [{"request_id": "r1", "label": 1, "extra": true}]}', 422, "labels[0].extra"),
    (b'{"labels": [{"request_id": "r1", "label": [1]}]}', 422, "labels[0].label"),
    (b'{"labels": [{"request_id": "r1", "label": {"a": 1}}]}', 422, "labels[0].label"),
    (b'{"labels": [{"request_id": "r", "label": ' + b"[" * 900 + b"]" * 900 + b"}]}", 422, "labels[0].label"),
    (b'{"labels": [' + b"[" * 5000 + b"]" * 5000 + b"]}", 400, "body"),  # past the JSON parser's depth
]
PROMOTE_HOSTILE = [
    (b"", 400, "body"),
    (b"version=2", 400, "body"),
    (b"[]", 422, "body"),
    (b"null", 422, "body"),
    (b"{}", 422, "version"),
    (b'{"v": 2}', 422, "version"),
    (b'{"version": null}', 422, "version"),
    (b'{"version": "two"}', 422, "version"),
    (b'{"version": "-1"}', 422, "version"),
    (b'{"version": -1}', 422, "version"),
    (b'{"version": 2.5}', 422, "version"),
    (b'{"version": true}', 422, "version"),
    (b'{"version": ["2"]}', 422, "version"),
    (b'{"version": {"number": 2}}', 422, "version"),
]


def refused_naming(
    document: dict[str, Any], method: str, path: str, response: httpx.Response
) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body: dict[str, Any] = response.json()
    assert body["field"] and body["error"].startswith(f"{body['field']}: ")
    assert body["errors"][0]["field"] == body["field"]
    answers_as_declared(document, method, path, response)
    return body


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
async def test_hostile_bodies_get_4xx_naming_the_field(urls: dict[str, str], content_type: str) -> None:
    headers = {"content-type": content_type}
    async with httpx.AsyncClient(timeout=30) as http:
        monitor = await openapi_of(http, urls["monitor"])
        registry = await openapi_of(http, urls["registry"])
        for content, status, field in LABELS_HOSTILE:
            response = await http.post(f"{urls['monitor']}/labels", content=content, headers=headers)
            body = refused_naming(monitor, "post", "/labels", response)
            assert (response.status_code, body["field"]) == (status, field), (content[:80], body)

        promote = f"{urls['registry']}/models/churn-demo/promote"
        for content, status, field in PROMOTE_HOSTILE:
            response = await http.post(promote, content=content, headers=headers | AUTH)
            body = refused_naming(registry, "post", "/models/{name}/promote", response)
            assert (response.status_code, body["field"]) == (status, field), (content, body)
            # Without the token the command is refused before its body is even read.
            unauthorized = await http.post(promote, content=content, headers=headers)
            assert unauthorized.status_code == 401 and unauthorized.json()["field"] == "authorization"
        several = await http.post(f"{urls['monitor']}/labels", json={"labels": [{}, {"request_id": "r"}]})
        fields = [e["field"] for e in several.json()["errors"]]
        assert fields == ["labels[0].request_id", "labels[0].label", "labels[1].label"]


async def test_registry_commands_are_off_without_a_token(settings: MeshSettings) -> None:
    async with mesh(settings, ("registry",)) as urls, httpx.AsyncClient(timeout=30) as http:
        for command, content in (
            ("promote", b'{"version": "2"}'),
            ("promote", b"garbage"),
            ("rollback", b""),
        ):
            response = await http.post(
                f"{urls['registry']}/models/churn-demo/{command}", content=content, headers=AUTH
            )
            assert response.status_code == 403, response.text
            assert response.json()["field"] == "authorization"


async def test_unknown_routes_and_methods_answer_the_mesh_error_shape(urls: dict[str, str]) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        missing = await http.get(f"{urls['monitor']}/nowhere")
        assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
        wrong = await http.get(f"{urls['monitor']}/labels")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
        assert wrong.json() == {"error": "Method Not Allowed"}
