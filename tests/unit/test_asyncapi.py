"""docs/asyncapi.yaml: current with the code, every stream there with its payload schema, the shape of an
AsyncAPI 3.0 document, and the services' wiring read right from their source (shared/ops/asyncapi.py)."""

from __future__ import annotations

import difflib
import inspect
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from shared import events
from shared.bus import MeshBus, dead_letter, delivery
from shared.events import SCHEMA_VERSION, DataIngested, Envelope, LabelObserved, new_event, utcnow
from shared.ops import asyncapi
from shared.runtime.settings import REPO_ROOT, SERVICE_NAMES, MeshSettings

# The official JSON Schema of AsyncAPI 3.0.0 (asyncapi/spec-json-schemas: schemas/3.0.0-without-$id.json,
# Apache-2.0). Not shipped by any package here: validated against when vendored at this path.
OFFICIAL_SCHEMA = REPO_ROOT / "tests" / "data" / "asyncapi-3.0.0.json"

COMPONENT_KEY = re.compile(r"^[\w\d.\-_]+$")
TOP_LEVEL = {
    "asyncapi",
    "id",
    "info",
    "servers",
    "defaultContentType",
    "channels",
    "operations",
    "components",
}
CHANNEL_FIELDS = {
    "address",
    "messages",
    "title",
    "summary",
    "description",
    "servers",
    "parameters",
    "tags",
    "externalDocs",
    "bindings",
}
OPERATION_FIELDS = {
    "action",
    "channel",
    "title",
    "summary",
    "description",
    "security",
    "tags",
    "externalDocs",
    "bindings",
    "traits",
    "messages",
    "reply",
}
MESSAGE_FIELDS = {
    "headers",
    "payload",
    "correlationId",
    "contentType",
    "name",
    "title",
    "summary",
    "description",
    "tags",
    "externalDocs",
    "bindings",
    "examples",
    "traits",
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi.build_document()


@pytest.fixture(scope="module")
def topology() -> asyncapi.Topology:
    return asyncapi.scan_services()


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref}: not a reference inside the document"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref}: nothing at {part!r}"
        node = node[part]
    return node


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def validator(document: dict[str, Any], ref: str) -> Draft7Validator:
    """Validates against the schema at ``ref``, resolving references inside the document."""
    return Draft7Validator({**document, "$ref": ref})


# ---- the committed document ---------------------------------------------------------------------------


def test_the_committed_document_is_current() -> None:
    committed = asyncapi.DOCUMENT.read_text() if asyncapi.DOCUMENT.exists() else ""
    fresh = asyncapi.render()
    if committed != fresh:
        diff = difflib.unified_diff(
            committed.splitlines(keepends=True),
            fresh.splitlines(keepends=True),
            "docs/asyncapi.yaml (committed)",
            "docs/asyncapi.yaml (generated from the code)",
            n=1,
        )
        shown = "".join(list(diff)[:80])
        pytest.fail(
            f"docs/asyncapi.yaml is out of date with the code: run `make docs` and commit it.\n{shown}"
        )


def test_generation_is_deterministic_and_the_yaml_says_what_was_built(document: dict[str, Any]) -> None:
    text = asyncapi.render()
    assert text == asyncapi.render()
    assert yaml.safe_load(text) == document
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:", text), "no timestamps in the document"


# ---- every stream and its event -------------------------------------------------------------------------


@pytest.mark.parametrize("stream", events.ALL_STREAMS, ids=str)
def test_every_stream_has_its_channel_message_and_payload_schema(
    document: dict[str, Any], stream: events.Stream[Any]
) -> None:
    channel = document["channels"][str(stream)]
    assert channel["address"] == str(stream)
    [ref] = [m["$ref"] for m in channel["messages"].values()]
    message = resolve(document, ref)
    assert message["name"] == str(stream)
    assert message["correlationId"]["location"] == "$message.payload#/correlation_id"

    envelope = resolve(document, message["payload"]["$ref"])
    assert set(envelope["properties"]) == set(Envelope.model_fields)
    assert envelope["properties"]["type"]["const"] == str(stream)
    assert envelope["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert all(
        field.get("description") for name, field in envelope["properties"].items() if name != "payload"
    )

    payload = resolve(document, envelope["properties"]["payload"]["$ref"])
    expected = stream.payload.model_json_schema(ref_template=asyncapi.SCHEMA_REF)
    expected.pop("$defs", None)
    assert payload == expected


def test_the_envelope_schemas_accept_what_the_mesh_writes_and_refuse_a_wrong_type(
    document: dict[str, Any],
) -> None:
    ingested = DataIngested(
        dataset="demo", snapshot_id="s1", path="/d/s1.parquet", row_count=3, schema_hash="h"
    )
    written: dict[events.Stream[Any], Envelope[Any]] = {
        events.DATA_INGESTED: new_event(events.DATA_INGESTED, ingested),
        events.LABELS: new_event(
            events.LABELS, LabelObserved(request_id="r1", label=1, observed_at=utcnow())
        ),
        events.DEADLETTER: dead_letter(events.LABELS, "monitor", "1-0", b"{", None, "invalid event: x", 1),
    }
    for stream, envelope in written.items():
        schema = validator(document, f"#/components/schemas/{stream.payload.__name__}Event")
        event = json.loads(envelope.model_dump_json())
        assert not list(schema.iter_errors(event)), stream
        assert list(
            schema.iter_errors({**event, "type": "labels" if stream != events.LABELS else "deadletter"})
        )
    # What README's example XADDs: the fields with defaults may be left out.
    readme = {
        "type": "ingest.requested",
        "correlation_id": "c1",
        "payload": {"dataset": "demo", "uri": "/x.csv"},
    }
    assert not list(validator(document, "#/components/schemas/IngestRequestedEvent").iter_errors(readme))


# ---- the shape of an AsyncAPI 3.0 document ----------------------------------------------------------------


def test_the_document_has_the_structure_of_asyncapi_3(document: dict[str, Any]) -> None:
    assert set(document) <= TOP_LEVEL
    assert document["asyncapi"] == "3.0.0"
    assert isinstance(document["info"]["title"], str) and isinstance(document["info"]["version"], str)
    for server in document["servers"].values():
        assert {"host", "protocol"} <= set(server)
    for kind in ("messages", "schemas"):
        bad = [key for key in document["components"][kind] if not COMPONENT_KEY.match(key)]
        assert not bad, f"components/{kind}: keys AsyncAPI does not allow: {bad}"
    for ref in references(document):
        resolve(document, ref)

    def unknown(obj: dict[str, Any], fields: set[str]) -> list[str]:
        return [key for key in obj if key not in fields and not key.startswith("x-")]

    for name, channel in document["channels"].items():
        assert not unknown(channel, CHANNEL_FIELDS), name
        assert all(m["$ref"].startswith("#/components/messages/") for m in channel["messages"].values())
    for name, message in document["components"]["messages"].items():
        assert not unknown(message, MESSAGE_FIELDS), name
    for name, operation in document["operations"].items():
        assert not unknown(operation, OPERATION_FIELDS), name
        assert operation["action"] in ("send", "receive")
        channel_ref = operation["channel"]["$ref"]
        assert channel_ref.startswith("#/channels/")
        for message in operation["messages"]:  # a subset of its channel's messages
            assert message["$ref"].startswith(f"{channel_ref}/messages/"), name


def test_the_document_validates_against_the_official_asyncapi_schema(document: dict[str, Any]) -> None:
    schema = json.loads(OFFICIAL_SCHEMA.read_text())
    errors = sorted(Draft7Validator(schema).iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in errors)


# ---- who publishes and who consumes: read from the services' source --------------------------------------


def test_every_service_is_in_the_document(topology: asyncapi.Topology, document: dict[str, Any]) -> None:
    assert set(topology.services) == set(SERVICE_NAMES)
    tags = {tag["name"] for tag in document["info"]["tags"]}
    assert set(SERVICE_NAMES) <= tags


def test_the_scan_finds_every_bus_call_a_plain_search_finds(topology: asyncapi.Topology) -> None:
    """Each ``consume``, ``consume_batch``, ``listen``, ``emit`` and ``new_event`` of ``events.X`` in a
    service, found by a regular expression instead of the syntax tree, is in the topology: nothing else."""
    kinds = {
        "consume": "group",
        "consume_batch": "batch",
        "listen": "broadcast",
        "emit": "send",
        "new_event": "send",
    }
    call = re.compile(r"\b(consume_batch|consume|listen|emit|new_event)\(\s*events\.([A-Z_]+)\b")
    found: set[tuple[str, str, str]] = set()
    for service in SERVICE_NAMES:
        for path in (REPO_ROOT / "services" / service).rglob("*.py"):
            for verb, constant in call.findall(path.read_text()):
                found.add((service, kinds[verb], str(getattr(events, constant))))
    scanned: set[tuple[str, str, str]] = {(c.service, c.delivery, c.stream) for c in topology.consumptions}
    scanned |= {
        (p.service, "send", p.stream)
        for p in topology.publications
        if p.sources != (asyncapi.DELIVERY_SOURCE,)
    }
    assert scanned == found


def test_each_consumer_group_is_the_one_the_bus_gives_the_service(topology: asyncapi.Topology) -> None:
    async def handler(_: Any) -> None:
        return None

    for c in topology.consumptions:
        bus = MeshBus(MeshSettings(), c.service, consumer_name="asyncapi-test")
        stream = events.STREAMS_BY_NAME[c.stream]
        if c.delivery == "broadcast":
            bus.listen(stream, handler)
            assert c.group is None and not bus._consumers
            continue
        (bus.consume_batch if c.delivery == "batch" else bus.consume)(stream, handler)
        assert [consumer.group for consumer in bus._consumers] == [c.group], c


def test_the_mesh_wiring_as_the_architecture_describes_it(topology: asyncapi.Topology) -> None:
    consumers = {(c.stream, c.service): (c.delivery, c.group) for c in topology.consumptions}
    assert consumers[("data.ingested", "features")] == ("group", "features")
    assert consumers[("model.promoted", "serving")] == ("broadcast", None)
    assert consumers[("predictions", "monitor")] == ("batch", "monitor")
    publishers = {(p.stream, p.service) for p in topology.publications}
    assert {("model.promoted", "registry"), ("predictions", "serving"), ("labels", "monitor")} <= publishers
    # The bus dead-letters for consumer groups only (Deliveries), never for a broadcast: a service that
    # only listens publishes no dead letters.
    assert "dead_letter(" in inspect.getsource(delivery.Deliveries)
    assert "dead_letter" not in inspect.getsource(delivery.deliver_broadcast)
    grouped = {c.service for c in topology.consumptions if c.group is not None}
    assert {p.service for p in topology.publications if p.stream == "deadletter"} == grouped
    assert "serving" not in grouped


def test_what_operators_do_is_what_the_mesh_cli_does() -> None:
    ops = "\n".join(
        path.read_text()
        for path in sorted((REPO_ROOT / "shared" / "ops").glob("*.py"))
        if path.name != "asyncapi.py"
    )
    constants = {str(stream): name for name, stream in asyncapi.stream_constants().items()}
    for outside in asyncapi.OUTSIDE:
        if outside.party == "operators":
            assert re.search(rf"\bevents\.{constants[str(outside.stream)]}\b", ops), outside


# ---- the scanner on sources of its own ---------------------------------------------------------------------


def _service(root: Path, name: str, source: str) -> Path:
    package = root / "services" / name
    package.mkdir(parents=True)
    (package / "app.py").write_text(source)
    return package


def test_the_scan_reads_groups_batches_broadcasts_and_imported_constants(tmp_path: Path) -> None:
    _service(
        tmp_path,
        "audit",
        '"""Audit: reads everything."""\n'
        "from shared import events as ev\n"
        "from shared.events import LABELS, new_event\n"
        "def create_app():\n"
        '    runtime = ServiceRuntime("audit")\n'
        "    runtime.consume(ev.DATA_INGESTED, on_data, deps)\n"
        '    runtime.bus.consume(stream=ev.MODEL_TRAINED, handler=on_trained, group="auditors")\n'
        "    runtime.consume_batch(LABELS, on_labels, deps)\n"
        "    runtime.listen(ev.MODEL_PROMOTED, on_promoted, deps)\n"
        "async def on_data(deps, event):\n"
        "    await deps.bus.emit(ev.DRIFT_DETECTED, payload, cause=event)\n"
        "    return [new_event(ev.RETRAIN_REQUESTED, retrain)]\n",
    )
    topology = asyncapi.scan_services(tmp_path)
    assert topology.services == {"audit": "Audit: reads everything."}
    assert {(c.stream, c.delivery, c.group) for c in topology.consumptions} == {
        ("data.ingested", "group", "audit"),
        ("model.trained", "group", "auditors"),
        ("labels", "batch", "audit"),
        ("model.promoted", "broadcast", None),
    }
    assert {(p.stream, p.sources) for p in topology.publications} == {
        ("drift.detected", ("services/audit/app.py",)),
        ("retrain.requested", ("services/audit/app.py",)),
        ("deadletter", (asyncapi.DELIVERY_SOURCE,)),
    }


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ('ServiceRuntime("x").consume(stream_of(name), h, deps)', "app.py:2: consume(...) binds no stream"),
        ("new_event(DATA_INGESTED, payload)", "app.py:2: new_event(...) binds no stream"),
        ("ServiceRuntime(name).consume(events.LABELS, h, deps)", "app.py:2: ServiceRuntime(...): give the"),
        ("bus.consume(events.LABELS, h)", "app.py:2: no consumer group"),
    ],
)
def test_the_scan_refuses_what_it_cannot_read_plainly(tmp_path: Path, body: str, says: str) -> None:
    _service(tmp_path, "x", f"from shared import events\n{body}\n")
    with pytest.raises(asyncapi.TopologyError, match=re.escape(says)):
        asyncapi.scan_services(tmp_path)
