"""The AsyncAPI 3.0 document of the mesh's events (``docs/asyncapi.yaml``), generated from the code.

``python -m shared.ops.asyncapi [PATH]`` (``make docs``) writes it to PATH, or to stdout without one.
Where each part comes from:

* every stream, its payload model and the envelope: ``shared.events`` (``ALL_STREAMS``, ``Envelope``);
  the schemas are pydantic's (validation mode: what a consumer accepts);
* who consumes which stream, in which consumer group and how, and who publishes it: read from the
  services' source (``services/<name>/*.py``, :func:`scan_services`): the stream constant handed to
  ``consume``, ``consume_batch``, ``listen``, ``emit`` or ``new_event``. As in ``shared.bus``, a consumer
  group is named after the service (the name its ``ServiceRuntime`` or ``MeshBus`` is given) unless the
  call says ``group=``; the bus of every service with a group publishes to ``deadletter``
  (``shared.bus.delivery``); a broadcast (``listen``) has no group and dead-letters nothing;
* what parties outside ``services/`` do (other systems, operators with the ``mesh`` CLI) and a one-line
  summary per stream: declared here (:data:`OUTSIDE`, :data:`STREAM_SUMMARIES`).

FastStream 0.7.8 has a generator (``faststream.specification.AsyncAPI``), but it cannot describe this mesh
from its broker: the bus's subscribers take the raw ``RedisStreamMessage`` (documented as a ``null``
payload), every group has two subscribers (new entries, reclaim sweep), a service's broker holds only its
own subscribers, and events are written with ``broker.publish`` or a plain ``XADD``, neither recorded.

Nothing is read or generated on import, and the same code always gives the same bytes (sorted keys,
stable order, no timestamps).
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared import events
from shared.events import SCHEMA_VERSION, Envelope, Stream
from shared.runtime.settings import REPO_ROOT, MeshSettings

ASYNCAPI_VERSION: Final = "3.0.0"
DOCUMENT: Final = REPO_ROOT / "docs" / "asyncapi.yaml"
SCHEMA_REF: Final = "#/components/schemas/{model}"
ENTRY_FIELD: Final = "__data__"
DELIVERY_SOURCE: Final = "shared/bus/delivery.py"

Delivery = Literal["group", "batch", "broadcast"]
Action = Literal["send", "receive"]

# The bus's calls that bind a stream, by what they do with it (shared/bus/bus.py, shared/runtime/service.py).
CONSUMING_CALLS: Final[Mapping[str, Delivery]] = {
    "consume": "group",
    "consume_batch": "batch",
    "listen": "broadcast",
}
PUBLISHING_CALLS: Final = ("emit", "new_event")
# Where a service's bus gets its name, which is its default consumer group: ServiceRuntime("ingest"),
# MeshBus(settings, "serving"); the position of that argument.
NAMING_CALLS: Final[Mapping[str, int]] = {"ServiceRuntime": 0, "MeshBus": 1}

ENVELOPE_FIELDS: Final[Mapping[str, str]] = {
    "event_id": (
        "Unique id of the event. An event emitted while handling another gets an id derived from its "
        "cause, so a redelivered cause re-emits the same id, and a consumer group reading one entry at a "
        "time skips an id it has already handled."
    ),
    "type": "The event type: the name of the stream the event travels on (one stream per event type).",
    "schema_version": (
        f"Version of the envelope and payload contracts. This build reads version {SCHEMA_VERSION} only."
    ),
    "occurred_at": "When the event was created (RFC 3339, UTC).",
    "correlation_id": "The same for every event of one causal chain, from its first event on.",
    "causation_id": "The `event_id` of the event that caused this one; null for the first of a chain.",
    "payload": "The stream's payload.",
}

STREAM_SUMMARIES: Final[Mapping[str, str]] = {
    events.INGEST_REQUESTED: (
        "Ask ingest to read a batch from a file under its data root (`MESH_DATA_ROOT`): a path relative "
        "to it, or an absolute path or `file://` URI inside it; anything else is dead-lettered."
    ),
    events.DATA_INGESTED: "A validated batch was stored as an immutable, content-addressed snapshot.",
    events.FEATURES_READY: (
        "A feature set (train/holdout split and reference profile) was built over a dataset's snapshots."
    ),
    events.RETRAIN_REQUESTED: "Retrain a dataset's model on its latest window of snapshots.",
    events.MODEL_TRAINED: "A model was trained and logged as an MLflow run, with its lineage and metrics.",
    events.MODEL_PROMOTED: "A model's `champion` alias moved: a promotion (gate or command) or a rollback.",
    events.MODEL_REJECTED: "The registry's gate refused a candidate, with its reasons and evidence.",
    events.MODEL_SWAP_FAILED: (
        "A serving worker could not load the champion it was told to serve, and answers with the version "
        "it had: once per worker and run of failures of that version."
    ),
    events.PREDICTIONS: "Sampled records of the predictions served, with the model version that answered.",
    events.LABELS: "Ground truth arriving after a prediction, joined to it by `request_id`.",
    events.DRIFT_DETECTED: "A model's window drifted or decayed: the start of an episode, with its scores.",
    events.DEADLETTER: (
        "An entry a consumer group gave up on: the original message, its stream and group, the error and "
        "the number of attempts."
    ),
}

PARTY_DESCRIPTIONS: Final[Mapping[str, str]] = {
    "operators": (
        "People operating the mesh with the `mesh` CLI (shared/ops). Besides what is listed, "
        "`mesh publish STREAM` writes an event on any stream, `mesh deadletter replay` puts a dead letter "
        "back on its stream, and `mesh watch` reads every stream (XREAD, no group)."
    ),
    "other-systems": (
        "Systems outside the mesh, writing an event with a plain "
        f"`XADD STREAM * {ENTRY_FIELD} <envelope JSON>`."
    ),
}


@dataclass(frozen=True)
class Outside:
    """What a party outside ``services/`` does with a stream."""

    party: str
    action: Action
    stream: Stream[Any]
    summary: str


OUTSIDE: Final[tuple[Outside, ...]] = (
    Outside("other-systems", "send", events.INGEST_REQUESTED, "Ask for a batch to be ingested."),
    Outside("other-systems", "send", events.RETRAIN_REQUESTED, "Ask for a dataset's model to be retrained."),
    Outside("other-systems", "send", events.LABELS, "Ground truth for earlier predictions."),
    Outside("operators", "send", events.RETRAIN_REQUESTED, "`mesh retrain MODEL --reason ...`."),
    Outside(
        "operators",
        "receive",
        events.MODEL_PROMOTED,
        "`mesh models show`: the registry's last decision (XREVRANGE, no group).",
    ),
    Outside(
        "operators",
        "receive",
        events.MODEL_REJECTED,
        "`mesh models show`: the registry's last decision (XREVRANGE, no group).",
    ),
    Outside(
        "operators",
        "receive",
        events.DEADLETTER,
        "`mesh deadletter list|show|replay|purge` (XRANGE, no group).",
    ),
)


class TopologyError(ValueError):
    """The code does not say plainly what the document must say (which stream a bus call binds, say)."""


@dataclass(frozen=True)
class Consumption:
    """A service reading a stream: in its consumer group (one entry or a batch per read), or a broadcast."""

    service: str
    stream: str
    delivery: Delivery
    group: str | None
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Publication:
    """A service writing events on a stream."""

    service: str
    stream: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Topology:
    services: Mapping[str, str]  # name -> what its app.py says it is
    consumptions: tuple[Consumption, ...]
    publications: tuple[Publication, ...]


# ---- reading the services' source ---------------------------------------------------------------------


def stream_constants() -> dict[str, Stream[Any]]:
    """``shared.events``' stream constants by their name there (``DATA_INGESTED``)."""
    return {name: value for name, value in vars(events).items() if isinstance(value, Stream)}


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def _imports(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted name it was imported as (``events`` -> ``shared.events``)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    head = alias.name.split(".")[0]
                    names[head] = head
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


class _SourceFile:
    def __init__(self, path: Path, root: Path) -> None:
        self.where = path.relative_to(root).as_posix()
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.imported = _imports(self.tree)
        self.constants = stream_constants()

    def stream(self, node: ast.expr | None) -> Stream[Any] | None:
        """The ``shared.events`` stream constant ``node`` names (``events.X``, ``X`` imported), if it does."""
        dotted = _dotted(node) if node is not None else None
        if dotted is None:
            return None
        head, _, rest = dotted.partition(".")
        full = self.imported.get(head, head) + (f".{rest}" if rest else "")
        module, _, name = full.rpartition(".")
        return self.constants.get(name) if module == "shared.events" else None

    def calls(self) -> Iterator[tuple[str, ast.Call]]:
        """Every call with the name it calls (``bus.emit(...)``, ``f().emit(...)``: ``emit``)."""
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call):
                if isinstance(node.func, ast.Attribute):
                    yield node.func.attr, node
                elif isinstance(node.func, ast.Name):
                    yield node.func.id, node

    def fail(self, node: ast.AST, message: str) -> TopologyError:
        return TopologyError(f"{self.where}:{getattr(node, 'lineno', '?')}: {message}")


def _argument(call: ast.Call, position: int, keyword: str) -> ast.expr | None:
    if len(call.args) > position and not any(isinstance(a, ast.Starred) for a in call.args[: position + 1]):
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _first_paragraph(path: Path) -> str:
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    paragraph = docstring.strip().split("\n\n")[0]
    return " ".join(paragraph.split()).replace("``", "`")


def scan_service(package: Path, root: Path) -> tuple[list[Consumption], list[Publication]]:
    """What one service's source binds: each stream it consumes (and how) and each it publishes."""
    files = [_SourceFile(path, root) for path in sorted(package.rglob("*.py"))]
    bus_names: set[str] = set()
    for source in files:
        for name, call in source.calls():
            if name in NAMING_CALLS:
                literal = _literal(_argument(call, NAMING_CALLS[name], "service"))
                if literal is None:
                    raise source.fail(call, f"{name}(...): give the service's name as a string literal")
                bus_names.add(literal)
    if len(bus_names) > 1:
        raise TopologyError(f"{package.relative_to(root)}: its buses have several names: {sorted(bus_names)}")
    bus_name = next(iter(bus_names), None)

    consumed: dict[tuple[str, Delivery, str | None], set[str]] = {}
    published: dict[str, set[str]] = {}
    for source in files:
        for name, call in source.calls():
            if name not in CONSUMING_CALLS and name not in PUBLISHING_CALLS:
                continue
            stream = source.stream(_argument(call, 0, "stream"))
            if stream is None:
                raise source.fail(
                    call,
                    f"{name}(...) binds no stream constant of shared.events (write events.X): the AsyncAPI "
                    "document could not say which stream it is",
                )
            if name in PUBLISHING_CALLS:
                published.setdefault(str(stream), set()).add(source.where)
                continue
            delivery = CONSUMING_CALLS[name]
            group: str | None = None
            if delivery != "broadcast":
                given = next((k.value for k in call.keywords if k.arg == "group"), None)
                group = _literal(given) if given is not None else bus_name
                if group is None:
                    raise source.fail(call, "no consumer group: name the bus (ServiceRuntime) or give group=")
            consumed.setdefault((str(stream), delivery, group), set()).add(source.where)

    service = package.name
    consumptions = [
        Consumption(service, stream, delivery, group, tuple(sorted(where)))
        for (stream, delivery, group), where in consumed.items()
    ]
    if any(c.group is not None for c in consumptions):
        published.setdefault(str(events.DEADLETTER), set()).add(DELIVERY_SOURCE)
    publications = [Publication(service, stream, tuple(sorted(where))) for stream, where in published.items()]
    return consumptions, publications


def scan_services(root: Path = REPO_ROOT) -> Topology:
    """Every service under ``root/services`` (a package with an ``app.py``), as its source wires it."""
    services: dict[str, str] = {}
    consumptions: list[Consumption] = []
    publications: list[Publication] = []
    for app in sorted((root / "services").glob("*/app.py")):
        services[app.parent.name] = _first_paragraph(app)
        consumed, published = scan_service(app.parent, root)
        consumptions += consumed
        publications += published
    return Topology(
        services=services,
        consumptions=tuple(sorted(consumptions, key=lambda c: (c.stream, c.service, c.delivery))),
        publications=tuple(sorted(publications, key=lambda p: (p.stream, p.service))),
    )


# ---- the document ---------------------------------------------------------------------------------------


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _setting(name: str) -> Any:
    """A setting's default (never the environment's value: the document is the same everywhere)."""
    return MeshSettings.model_fields[name].default


def _payload_schemas(streams: Sequence[Stream[Any]]) -> tuple[dict[str, str], dict[str, Any]]:
    """Each payload model's component name, and every schema they need (nested models too)."""
    models: list[type[BaseModel]] = list(dict.fromkeys(s.payload for s in streams))
    refs, top = models_json_schema([(m, "validation") for m in models], ref_template=SCHEMA_REF)
    names = {m.__name__: refs[(m, "validation")]["$ref"].rpartition("/")[2] for m in models}
    return names, dict(top.get("$defs", {}))


def _envelope_schema(stream: Stream[Any], payload_schema: str) -> dict[str, Any]:
    base = Envelope.model_json_schema(ref_template=SCHEMA_REF)
    missing = set(base["properties"]) ^ set(ENVELOPE_FIELDS)
    if missing:
        raise TopologyError(f"ENVELOPE_FIELDS does not match the Envelope's fields: {sorted(missing)}")
    properties = {
        name: {**schema, "description": ENVELOPE_FIELDS[name]} for name, schema in base["properties"].items()
    }
    properties["type"]["const"] = str(stream)
    properties["schema_version"]["const"] = SCHEMA_VERSION
    properties["payload"] = {"$ref": SCHEMA_REF.format(model=payload_schema)}
    return {
        "title": f"{stream} event",
        "description": (
            f"The envelope of every event on `{stream}`: its `type` is `{stream}`, its payload a "
            f"`{stream.payload.__name__}`."
        ),
        "type": "object",
        "additionalProperties": base.get("additionalProperties", False),
        "properties": properties,
        "required": list(base["required"]),
    }


def _message(stream: Stream[Any], envelope_schema: str) -> dict[str, Any]:
    return {
        "name": str(stream),
        "title": stream.payload.__name__,
        "summary": STREAM_SUMMARIES[stream],
        "contentType": "application/json",
        "correlationId": {
            "location": "$message.payload#/correlation_id",
            "description": "Every event of one causal chain carries the same `correlation_id`.",
        },
        "payload": {"$ref": SCHEMA_REF.format(model=envelope_schema)},
        "x-redis-entry-field": ENTRY_FIELD,
    }


def _delivery(consumption: Consumption) -> tuple[str, str]:
    """How a consumption is delivered: a summary and the rules behind it."""
    if consumption.delivery == "broadcast":
        return (
            "A broadcast: every process of the service reads each new entry, in no consumer group.",
            "Read from the stream's end (`$`): nothing is acknowledged, replayed or dead-lettered; the "
            "service reads the current state itself at start.",
        )
    group = f"In consumer group `{consumption.group}`"
    retries = (
        f"reclaimed (XAUTOCLAIM) once pending longer than `MESH_BUS_RECLAIM_IDLE_MS` "
        f"({_setting('bus_reclaim_idle_ms')} ms), dead-lettered when it fails its contract, raises a "
        f"permanent error or fails `MESH_BUS_MAX_ATTEMPTS` ({_setting('bus_max_attempts')}) times."
    )
    common = (
        "The group is created at `0`, so a new one drains the backlog; its consumers are the service's "
        "processes (`<service>-<host>-<pid>`), each event handled by one of them."
    )
    if consumption.delivery == "batch":
        return (
            f"{group}, many entries per read, handled and acknowledged together.",
            f"{common} A batch is acknowledged after its handler and its outgoing events; an entry failing "
            "its contract is dead-lettered alone; a failed batch stays pending and its entries are retried "
            f"one by one: {retries} Entries carry no done-markers: the handler tolerates a rare repeat.",
        )
    return (
        f"{group}, one entry per read.",
        f"{common} An entry is acknowledged after its handler and its outgoing events, and skipped if the "
        f"group already handled its `event_id` (a done-marker); a failed one stays pending and is {retries}",
    )


def _operation(
    party: str,
    action: Action,
    stream: Stream[Any],
    title: str,
    summary: str,
    extra: Mapping[str, Any],
    description: str | None = None,
) -> dict[str, Any]:
    message = stream.payload.__name__
    return {
        "action": action,
        "channel": {"$ref": _pointer("channels", str(stream))},
        "messages": [{"$ref": _pointer("channels", str(stream), "messages", message)}],
        "title": title,
        "summary": summary,
        **({"description": description} if description else {}),
        "tags": [{"name": party}],
        "x-party": party,
        **extra,
    }


def _operations(topology: Topology) -> dict[str, dict[str, Any]]:
    """One operation per party, action and stream, keyed ``<party>.<verb>.<stream>``."""
    by_name = events.STREAMS_BY_NAME
    operations: dict[str, dict[str, Any]] = {}
    verbs = {"group": "consume", "batch": "consume_batch", "broadcast": "listen"}
    phrases = {"group": "consumes", "batch": "consumes in batches", "broadcast": "listens to"}
    for c in topology.consumptions:
        extra: dict[str, Any] = {"x-delivery": c.delivery, "x-source": list(c.sources)}
        if c.group is not None:
            extra["x-consumer-group"] = c.group
        summary, description = _delivery(c)
        title = f"{c.service} {phrases[c.delivery]} {c.stream}"
        operations[f"{c.service}.{verbs[c.delivery]}.{c.stream}"] = _operation(
            c.service, "receive", by_name[c.stream], title, summary, extra, description
        )
    for p in topology.publications:
        operations[f"{p.service}.publish.{p.stream}"] = _publishing(p, topology)
    for o in OUTSIDE:
        verb = "publish" if o.action == "send" else "read"
        title = f"{o.party} {verb}s {o.stream}"
        key = f"{o.party}.{verb}.{o.stream}"
        operations[key] = _operation(o.party, o.action, o.stream, title, o.summary, {})
    return operations


def _publishing(publication: Publication, topology: Topology) -> dict[str, Any]:
    p, stream = publication, events.STREAMS_BY_NAME[publication.stream]
    title = f"{p.service} publishes {p.stream}"
    extra: dict[str, Any] = {"x-source": list(p.sources)}
    if stream != events.DEADLETTER:
        return _operation(p.service, "send", stream, title, STREAM_SUMMARIES[stream], extra)
    mine = [c for c in topology.consumptions if c.service == p.service]
    groups = sorted({(c.stream, c.group) for c in mine if c.group})
    extra["x-dead-letters"] = [{"stream": s, "group": g} for s, g in groups]
    summary = f"The bus of {p.service} dead-letters the entries its consumer groups give up on."
    description = (
        "Each entry once: the letter's `event_id` derives from the group and the entry id. It continues "
        "the failed event's chain when that event could be parsed."
    )
    return _operation(p.service, "send", stream, title, summary, extra, description)


def _channel(stream: Stream[Any], topology: Topology) -> dict[str, Any]:
    name = str(stream)
    publishers = [p.service for p in topology.publications if p.stream == name]
    publishers += [o.party for o in OUTSIDE if o.stream == name and o.action == "send"]
    consumers = [
        {"party": c.service, "delivery": c.delivery, **({"group": c.group} if c.group else {})}
        for c in topology.consumptions
        if c.stream == name
    ]
    readers = [o.party for o in OUTSIDE if o.stream == name and o.action == "receive"]
    consumed = [
        f"{c['party']} (group `{c['group']}`{', in batches' if c['delivery'] == 'batch' else ''})"
        if "group" in c
        else f"{c['party']} (broadcast: every process, no group)"
        for c in consumers
    ]
    description = [
        f"Redis stream `{name}`, trimmed to about `MESH_STREAM_MAXLEN` ({_setting('stream_maxlen')}) "
        "entries, never past an entry a consumer group has not read or acknowledged.",
        f"Published by: {', '.join(dict.fromkeys(publishers)) or 'nobody'}.",
        f"Consumed by: {', '.join(consumed) or 'no consumer group'}.",
    ]
    if readers:
        description.append(f"Also read by: {', '.join(dict.fromkeys(readers))}.")
    message = stream.payload.__name__
    return {
        "address": name,
        "title": name,
        "summary": STREAM_SUMMARIES[stream],
        "description": "\n".join(description),
        "messages": {message: {"$ref": _pointer("components", "messages", message)}},
        "x-published-by": list(dict.fromkeys(publishers)),
        "x-consumed-by": consumers,
        **({"x-read-by": list(dict.fromkeys(readers))} if readers else {}),
    }


INFO_DESCRIPTION: Final = f"""\
Every stream of the mesh, its event, who publishes it and who consumes it, in which consumer group.
Generated from the code by `python -m shared.ops.asyncapi` (`make docs`): do not edit by hand.

Each Redis stream carries one event type, named after it. An event is a JSON envelope (`event_id`,
`type`, `schema_version`, `occurred_at`, `correlation_id`, `causation_id`, `payload`) in the stream
entry's field `{ENTRY_FIELD}`: plain JSON (a plain XADD, `publish_many`, the `mesh` CLI), or wrapped in
FastStream's binary message format with headers (`event_id`, `content-type`, `correlation_id`, the W3C
trace context) when published through the broker. The message schemas below are the envelopes.

Each consuming service reads in one consumer group, named after the service, with many consumers per group
(`<service>-<host>-<pid>`); broadcasts are read without a group. Delivery is at least once and handlers
are idempotent per `event_id`. An entry that fails its contract, or its handler `MESH_BUS_MAX_ATTEMPTS`
times, goes to `deadletter`."""


def build_document(topology: Topology | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document as plain data (``topology``: the services' wiring; default: scanned)."""
    topology = topology if topology is not None else scan_services()
    streams = events.ALL_STREAMS
    unsummarised = {str(s) for s in streams} ^ set(STREAM_SUMMARIES)
    if unsummarised:
        raise TopologyError(f"STREAM_SUMMARIES does not match shared.events' streams: {sorted(unsummarised)}")
    payload_names, schemas = _payload_schemas(streams)
    messages: dict[str, Any] = {}
    for stream in streams:
        payload = stream.payload.__name__
        envelope = f"{payload}Event"
        if envelope in schemas:
            raise TopologyError(f"a payload model is named {envelope}, the name of an envelope schema")
        schemas[envelope] = _envelope_schema(stream, payload_names[payload])
        messages[payload] = _message(stream, envelope)
    parties = [
        *({"name": name, "description": f"Service. {about}"} for name, about in topology.services.items()),
        *({"name": name, "description": about} for name, about in PARTY_DESCRIPTIONS.items()),
    ]
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "retrain-mesh events",
            "version": str(SCHEMA_VERSION),
            "description": INFO_DESCRIPTION,
            "tags": parties,
        },
        "defaultContentType": "application/json",
        "servers": {
            "mesh": {
                "host": f"127.0.0.1:{_setting('redis_port')}",
                "pathname": "/0",
                "protocol": "redis",
                "title": "The mesh's Redis",
                "description": (
                    "Any Redis >= 7 named by `MESH_REDIS_URL`; unset, the embedded valkey-server on "
                    f"127.0.0.1 at `MESH_REDIS_PORT` ({_setting('redis_port')})."
                ),
            }
        },
        "channels": {str(s): _channel(s, topology) for s in streams},
        "operations": _operations(topology),
        "components": {"messages": messages, "schemas": schemas},
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so descriptions read as written."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def render(document: Mapping[str, Any] | None = None) -> str:
    """The document as YAML, byte for byte the same for the same code."""
    data = build_document() if document is None else document
    return yaml.dump(data, Dumper=_Dumper, sort_keys=True, allow_unicode=True, width=110)


def write(path: Path) -> None:
    """Generate first, then replace ``path`` whole: a failed generation leaves the old document."""
    text = render()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text)
    partial.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or any(a.startswith("-") for a in args):
        print("usage: python -m shared.ops.asyncapi [PATH]  (no PATH: to stdout)", file=sys.stderr)
        return 2
    if args:
        write(Path(args[0]))
    else:
        sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
