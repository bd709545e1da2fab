"""Operating a running mesh from outside: what the ``mesh`` CLI's operator verbs do, without the printing.

Every function takes the settings and the clients it uses (an ``httpx.Client``, a ``redis.Redis``), so
tests hand it theirs. A failure is an :class:`OperateError` carrying the exit code the CLI ends with:
``EXIT_FAILED`` (1) when the mesh could not be reached, refused, or did not get there in time;
``EXIT_INVALID`` (2) when what was asked is invalid, found before anything was sent. Where a service is
unreachable the error names the service and the URL tried (:class:`Unreachable`); where it refuses, its
status, its message and the field it named (:class:`Refused`).

Service URLs come from the settings (``MESH_HOST`` and each service's port); events are written to
``settings.effective_redis_url`` exactly as the bus writes them (shared/bus/publish.py ``publish_many``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import redis
from pydantic import ValidationError

from shared import events
from shared.events import ContractError, Envelope, RetrainRequested, Stream, new_event, parse_event
from shared.runtime.auth import bearer_header
from shared.runtime.settings import SERVICE_NAMES, MeshSettings

EXIT_FAILED = 1
EXIT_INVALID = 2

WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")
HTTP_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 90.0  # a registry command may wait up to 60 s for the model's alias lock
DECISION_SCAN_LIMIT = 10_000  # entries read back per stream looking for a model's last registry decision
TOKEN_FILE = "registry-token"  # where the local stack keeps its registry token (shared/ops/processes.py)


class OperateError(Exception):
    """What went wrong, for an operator; ``details`` are further lines (field errors, say)."""

    def __init__(self, message: str, *, exit_code: int = EXIT_FAILED, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.details = list(details)


class Unreachable(OperateError):
    """A service (or Redis) did not answer at all at ``url``."""

    def __init__(self, service: str, url: str, cause: object) -> None:
        super().__init__(
            f"{service} is unreachable at {url} ({str(cause) or type(cause).__name__}): "
            "is the mesh running? (`mesh status`; `mesh up` starts it)"
        )
        self.service, self.url = service, url


class Refused(OperateError):
    """A service answered with an error status; ``field`` is the request field it named, if any."""

    def __init__(self, service: str, url: str, status: int, error: str, field: str | None) -> None:
        named = f" [field: {field}]" if field else ""
        super().__init__(f"{service} answered {status} to {url}: {error}{named}")
        self.service, self.url, self.status, self.error, self.field = service, url, status, error, field


class InvalidPayload(OperateError):
    """A payload that does not match its stream's contract; ``details`` holds pydantic's field errors."""

    def __init__(self, stream: str, error: ValidationError) -> None:
        payload = STREAM_PAYLOAD_NAME.get(stream, "payload")
        super().__init__(
            f"the payload does not match the {stream} contract ({payload}): nothing was published",
            exit_code=EXIT_INVALID,
            details=field_errors(error),
        )


STREAM_PAYLOAD_NAME = {name: stream.payload.__name__ for name, stream in events.STREAMS_BY_NAME.items()}


def field_errors(error: ValidationError) -> list[str]:
    """pydantic's errors, one ``field: message`` line each."""
    return [
        f"{'.'.join(str(p) for p in item['loc']) or '(payload)'}: {item['msg']}" for item in error.errors()
    ]


# --- clients -----------------------------------------------------------------------------------------


def service_url(settings: MeshSettings, service: str) -> str:
    """Where a client reaches ``service``: ``MESH_HOST`` (loopback when it is a wildcard bind address)."""
    host = "127.0.0.1" if settings.host in WILDCARD_HOSTS else settings.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port_for(service)}"


def redis_location(url: str) -> str:
    """A Redis URL fit to print: its password masked."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def http_client(timeout: float = HTTP_TIMEOUT_S) -> httpx.Client:
    return httpx.Client(timeout=timeout)


def redis_client(settings: MeshSettings) -> redis.Redis:
    """A synchronous client of the mesh's Redis (nothing is sent until it is used)."""
    return redis.Redis.from_url(settings.effective_redis_url, socket_connect_timeout=3.0, socket_timeout=30.0)


def _redis_call(settings: MeshSettings, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise Unreachable("redis", redis_location(settings.effective_redis_url), exc) from None


def request(
    http: httpx.Client,
    settings: MeshSettings,
    service: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """One request to ``service``; :class:`Unreachable` (naming service and URL) when nothing answers."""
    url = service_url(settings, service) + path
    try:
        # The data plane's token when one is set; a command's own (the registry's) in ``headers`` wins.
        return http.request(
            method, url, json=body, headers={**bearer_header(settings.api_token), **(headers or {})}
        )
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise Unreachable(service, url, exc) from None
    except httpx.TimeoutException:  # connected, but no answer in time: up, and busy or stuck
        waited = http.timeout.read
        raise OperateError(f"{service} did not answer {method} {url} within {waited}s") from None
    except httpx.TransportError as exc:
        raise Unreachable(service, url, exc) from None


def refused(service: str, response: httpx.Response) -> Refused:
    """The error a service answered, with the message and field it named when its body says them."""
    error, field = response.text.strip()[:500] or response.reason_phrase, None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = body.get("error", body.get("detail", body.get("message")))
        error = message if isinstance(message, str) else json.dumps(body)[:500]
        field = str(body["field"]) if body.get("field") is not None else None
    return Refused(service, str(response.request.url), response.status_code, error, field)


def answer(service: str, response: httpx.Response) -> Any:
    """The JSON a service answered with 2xx; :class:`Refused` otherwise."""
    if not response.is_success:
        raise refused(service, response)
    try:
        return response.json()
    except ValueError:
        raise OperateError(f"{service} answered {response.status_code} with no JSON body") from None


def _model_path(name: str, suffix: str = "") -> str:
    return f"/models/{quote(name, safe='')}{suffix}"


# --- models ------------------------------------------------------------------------------------------


def _loads(raw: str | None, default: Any) -> Any:
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return default


def version_info(alias: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A registry alias (``{"version", "run_id", "tags"}``) as metrics and lineage; None when unset."""
    if not alias:
        return None
    tags = alias.get("tags") or {}
    return {
        "version": str(alias["version"]),
        "run_id": alias.get("run_id") or None,
        "dataset": tags.get("mesh.dataset") or None,
        "feature_set_id": tags.get("mesh.feature_set_id") or None,
        "snapshot_ids": _loads(tags.get("mesh.snapshot_ids"), []),
        "metrics": _loads(tags.get("mesh.metrics"), {}),
    }


def registry_aliases(settings: MeshSettings, http: httpx.Client, name: str) -> dict[str, Any]:
    """The registry's GET /models/{name}: ``champion`` and ``previous`` as :func:`version_info`."""
    body = answer("registry", request(http, settings, "registry", "GET", _model_path(name)))
    return {alias: version_info(body.get(alias)) for alias in ("champion", "previous")}


def declared_datasets(config_dir: Path) -> dict[str, str]:
    """Model name -> dataset, from the model configs in ``config_dir`` (empty when they cannot be read)."""
    from shared.ml.modeling import model_configs  # the ML stack: seconds to import, only when needed

    try:
        return {config.model_name: config.dataset for config in model_configs(config_dir)}
    except (OSError, ValueError):
        return {}


def list_models(settings: MeshSettings, http: httpx.Client) -> list[dict[str, Any]]:
    """Every model serving declares or serves: its dataset, champion, previous and served versions."""
    served = answer("serving", request(http, settings, "serving", "GET", "/models"))
    status = {m["name"]: m for m in served.get("models", [])}
    names = list(dict.fromkeys([*served.get("declared", []), *status]))
    rows = []
    for name in names:
        aliases = registry_aliases(settings, http, name)
        champion, previous = aliases["champion"], aliases["previous"]
        state = status.get(name, {})
        rows.append(
            {
                "name": name,
                "dataset": state.get("dataset") or (champion or {}).get("dataset"),
                "champion": champion["version"] if champion else None,
                "previous": previous["version"] if previous else None,
                "served": str(state["version"]) if state.get("version") is not None else None,
                "loaded": bool(state.get("loaded", False)),
            }
        )
    if any(row["dataset"] is None for row in rows):
        datasets = declared_datasets(settings.config_dir)
        for row in rows:
            row["dataset"] = row["dataset"] or datasets.get(row["name"])
    return rows


def served_model(settings: MeshSettings, http: httpx.Client, name: str) -> dict[str, Any]:
    """Serving's GET /models/{name}, with ``declared``: False when serving does not know the model,
    ``served``: False when it knows it but serves no version yet."""
    response = request(http, settings, "serving", "GET", _model_path(name))
    if response.status_code == 404:
        try:
            body = response.json()
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else {}
        return {
            "name": name,
            "declared": body.get("field") != "model",  # serving names the field when it does not know it
            "served": False,
            "loaded": False,
            "version": None,
            "others_served": body.get("served") or [],
        }
    return {"declared": True, "served": True, **answer("serving", response)}


def show_model(settings: MeshSettings, http: httpx.Client, client: redis.Redis, name: str) -> dict[str, Any]:
    """One model: champion and previous with metrics and lineage, what serving serves, and the registry's
    last decision about it (its latest ``model.promoted`` or ``model.rejected`` event)."""
    aliases = registry_aliases(settings, http, name)
    serving = served_model(settings, http, name)
    decision = last_decision(settings, client, name)
    champion, previous = aliases["champion"], aliases["previous"]
    if champion is None and previous is None and decision is None and not serving["declared"]:
        known = serving.get("others_served") or []
        raise OperateError(
            f"model {name!r} is unknown: no version registered, not declared by serving"
            + (f" (served: {', '.join(known)})" if known else ""),
        )
    return {
        "name": name,
        "dataset": (champion or previous or {}).get("dataset"),
        "champion": champion,
        "previous": previous,
        "serving": serving,
        "last_decision": decision,
    }


def _entry_key(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def latest_event(
    client: redis.Redis, stream: Stream[Any], matches: Callable[[Envelope[Any]], bool], *, limit: int
) -> tuple[str, Envelope[Any]] | None:
    """The newest valid event on ``stream`` that ``matches``, reading back at most ``limit`` entries."""
    from shared.bus import entry_body

    upper, read = "+", 0
    while read < limit:
        entries: Any = client.xrevrange(stream, max=upper, min="-", count=min(200, limit - read))
        if not entries:
            return None
        for raw_id, fields in entries:
            read += 1
            try:
                event = parse_event(entry_body(fields), stream)
            except (ContractError, KeyError, ValueError):
                continue
            if matches(event):
                return _text(raw_id), event
        upper = f"({_text(entries[-1][0])}"
    return None


def last_decision(settings: MeshSettings, client: redis.Redis, name: str) -> dict[str, Any] | None:
    """The registry's latest decision about ``name``: a promotion, rollback or rejection, from the streams."""

    def about(event: Envelope[Any]) -> bool:
        return bool(event.payload.model_name == name)

    def newest(stream: Stream[Any]) -> Callable[[], Any]:
        return lambda: latest_event(client, stream, about, limit=DECISION_SCAN_LIMIT)

    found: list[tuple[str, Envelope[Any]]] = []
    for stream in (events.MODEL_PROMOTED, events.MODEL_REJECTED):
        hit = _redis_call(settings, newest(stream))
        if hit is not None:
            found.append(hit)
    if not found:
        return None
    entry_id, event = max(found, key=lambda hit: _entry_key(hit[0]))
    payload = event.payload
    decision = {
        "event": event.type,
        "event_id": event.event_id,
        "correlation_id": event.correlation_id,
        "occurred_at": event.occurred_at.isoformat(),
        "entry_id": entry_id,
        "run_id": payload.run_id,
    }
    if event.type == events.MODEL_REJECTED:
        return {**decision, "decision": "rejected", "reasons": payload.reasons}
    reason = payload.evidence.get("reason") if isinstance(payload.evidence, dict) else None
    return {
        **decision,
        "decision": "rolled back" if payload.action == "rollback" else "promoted",
        "version": payload.version,
        "previous_version": payload.previous_version,
        "reasons": [reason] if reason else [],
    }


# --- registry commands -------------------------------------------------------------------------------


def registry_token(settings: MeshSettings, given: str | None = None) -> str:
    """The registry's bearer token: ``given`` (``--token``), else ``MESH_REGISTRY_TOKEN``, else the one the
    local stack keeps in its state dir. Never makes one up: a new token would not be the registry's."""
    if given:
        return given
    if settings.registry_token or (settings.state_dir / TOKEN_FILE).is_file():
        from shared.ops.processes import registry_token as stack_token

        return stack_token(settings)
    raise OperateError(
        "no registry token: pass --token, set MESH_REGISTRY_TOKEN, or run against the local stack "
        f"(`mesh up` keeps its token in {settings.state_dir / TOKEN_FILE})",
        exit_code=EXIT_INVALID,
    )


def move_champion(
    settings: MeshSettings, http: httpx.Client, token: str, name: str, version: str | None
) -> dict[str, Any]:
    """POST /models/{name}/promote (``version``) or /rollback (None): the registry's announcement of the
    new champion (``model.promoted``'s payload and ``event_id``)."""
    headers = {"authorization": f"Bearer {token}"}
    if version is None:
        response = request(
            http, settings, "registry", "POST", _model_path(name, "/rollback"), headers=headers
        )
    else:
        path = _model_path(name, "/promote")
        response = request(
            http, settings, "registry", "POST", path, body={"version": version}, headers=headers
        )
    result: dict[str, Any] = answer("registry", response)
    return result


def wait_until_served(
    settings: MeshSettings,
    http: httpx.Client,
    name: str,
    version: str,
    *,
    timeout: float,
    on_poll: Callable[[str], None] | None = None,
    interval: float = 0.5,
) -> dict[str, Any]:
    """Poll serving's GET /models/{name} until version ``version`` is loaded and serving; what it said
    then. Serving restarting meanwhile is waited through; after ``timeout`` the last answer is reported."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = request(http, settings, "serving", "GET", _model_path(name))
        except Unreachable as exc:
            seen = f"serving unreachable at {exc.url}"
        except OperateError as exc:
            seen = exc.message
        else:
            body = response.json() if response.is_success else None
            if isinstance(body, dict):
                if body.get("loaded") and str(body.get("version")) == version:
                    return body
                seen = f"serving version {body.get('version')} (loaded: {body.get('loaded')})"
            else:
                seen = f"serving answered {response.status_code}: {refused('serving', response).error}"
        if on_poll is not None:
            on_poll(seen)
        if time.monotonic() >= deadline:
            raise OperateError(
                f"serving did not serve {name} version {version} within {timeout:.0f}s: {seen}"
            )
        time.sleep(interval)


# --- predictions -------------------------------------------------------------------------------------


def parse_record(text: str, where: str = "--json") -> dict[str, Any]:
    """One JSON object of named fields; :class:`OperateError` (exit 2) saying what is wrong otherwise."""
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise OperateError(f"{where}: not valid JSON ({exc})", exit_code=EXIT_INVALID) from None
    if not isinstance(record, dict):
        raise OperateError(f"{where}: expected a JSON object of named fields", exit_code=EXIT_INVALID)
    return record


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file, one object a line (blank lines skipped)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise OperateError(f"{path}: {exc.strerror or exc}", exit_code=EXIT_INVALID) from None
    records = [parse_record(line, f"{path}:{n}") for n, line in enumerate(lines, 1) if line.strip()]
    if not records:
        raise OperateError(f"{path}: no records (one JSON object a line)", exit_code=EXIT_INVALID)
    return records


def predict(
    settings: MeshSettings, http: httpx.Client, model: str, records: Sequence[dict[str, Any]], *, batch: bool
) -> dict[str, Any]:
    """Serving's answer for one record (POST /predict) or many (POST /predict_batch)."""
    if batch:
        body: dict[str, Any] = {"records": list(records), "model": model}
        response = request(http, settings, "serving", "POST", "/predict_batch", body=body)
    else:
        [record] = records
        response = request(
            http, settings, "serving", "POST", "/predict", body={"features": record, "model": model}
        )
    result: dict[str, Any] = answer("serving", response)
    return result


# --- events ------------------------------------------------------------------------------------------


def stream_named(name: str) -> Stream[Any]:
    stream = events.STREAMS_BY_NAME.get(name)
    if stream is None:
        known = ", ".join(events.STREAMS_BY_NAME)
        raise OperateError(f"unknown stream {name!r}; streams: {known}", exit_code=EXIT_INVALID)
    return stream


def build_event(stream_name: str, payload_text: str) -> Envelope[Any]:
    """A new event on ``stream_name`` carrying ``payload_text`` (JSON), validated against the stream's
    contract as its consumers will read it; :class:`InvalidPayload` (exit 2) listing field errors if not."""
    stream = stream_named(stream_name)
    data = parse_record(payload_text)
    try:
        payload = stream.payload.model_validate(data)
    except ValidationError as exc:
        raise InvalidPayload(stream, exc) from None
    envelope = new_event(stream, payload)
    try:  # the envelope as consumers parse it: what they read is what was validated here
        parse_event(envelope.model_dump_json(), stream)
    except ContractError as exc:
        raise OperateError(f"the event would not parse on {stream}: {exc}", exit_code=EXIT_INVALID) from None
    return envelope


def publish(settings: MeshSettings, client: redis.Redis, envelope: Envelope[Any]) -> str:
    """XADD the event to its stream in the bus's entry format (``__data__``: the envelope JSON); the entry
    id. No MAXLEN: a cap on write could trim entries a lagging group has not read; the bus's retention
    trims behind the slowest group."""
    entry_id = _redis_call(
        settings, lambda: client.xadd(envelope.type, {"__data__": envelope.model_dump_json()})
    )
    return _text(entry_id)


def retrain_event(
    settings: MeshSettings, model: str, reason: str, window_snapshots: int | None = None
) -> Envelope[RetrainRequested]:
    """``retrain.requested`` for ``model``'s dataset (from the model configs in ``settings.config_dir``)."""
    if not reason.strip():
        raise OperateError("--reason: say why (it is recorded with the retrain)", exit_code=EXIT_INVALID)
    datasets = declared_datasets(settings.config_dir)
    if model not in datasets:
        declared = ", ".join(sorted(datasets)) or "none"
        raise OperateError(
            f"model {model!r} is not declared in {settings.config_dir / 'models'} (declared: {declared})",
            exit_code=EXIT_INVALID,
        )
    payload = RetrainRequested(
        dataset=datasets[model],
        reason=reason,
        evidence={"requested_by": "mesh retrain", "model_name": model},
        window_snapshots=window_snapshots,
    )
    return new_event(events.RETRAIN_REQUESTED, payload)


# --- drift -------------------------------------------------------------------------------------------


def drift(settings: MeshSettings, http: httpx.Client, model: str) -> dict[str, Any]:
    """The monitor's GET /drift/{model}: windows evaluated, the latest one's decision and reasons."""
    path = f"/drift/{quote(model, safe='')}"
    result: dict[str, Any] = answer("monitor", request(http, settings, "monitor", "GET", path))
    return result


def drift_report_url(settings: MeshSettings, model: str) -> str:
    return f"{service_url(settings, 'monitor')}/drift/{quote(model, safe='')}/report"


# --- watching ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One stream entry as it arrived: its event (the envelope as JSON), or why it could not be read."""

    stream: str
    entry_id: str
    event: dict[str, Any] | None
    error: str | None = None

    @property
    def subject(self) -> str | None:
        """What the event is about: its model, else its dataset (else, dead letters, their stream)."""
        payload = (self.event or {}).get("payload")
        if not isinstance(payload, dict):
            return None
        for key in ("model_name", "dataset", "stream"):
            if payload.get(key):
                return str(payload[key])
        return None


def watched_streams(names: Iterable[str] | None) -> list[str]:
    """The streams named (each checked), or every stream of the mesh."""
    chosen = list(dict.fromkeys(names or []))
    return [str(stream_named(name)) for name in chosen] or [str(s) for s in events.ALL_STREAMS]


def stream_ends(settings: MeshSettings, client: redis.Redis, streams: Sequence[str]) -> dict[str, str]:
    """Each stream's last entry id as of now (``0-0`` for a stream not made yet): read from there, what
    arrives later is seen, even between two reads (unlike re-reading from ``$``)."""

    def ends() -> dict[str, str]:
        found = {}
        for stream in streams:
            try:
                found[stream] = _text(client.xinfo_stream(stream)["last-generated-id"])
            except redis.ResponseError:  # no such key: a stream made later starts after 0-0
                found[stream] = "0-0"
        return found

    result: dict[str, str] = _redis_call(settings, ends)
    return result


def decode_entry(stream: str, entry_id: str, fields: Mapping[Any, Any]) -> Seen:
    from shared.bus import entry_body

    try:
        event = json.loads(entry_body(fields))
    except Exception as exc:  # a watcher shows what it cannot read rather than stopping
        return Seen(stream, entry_id, None, f"{type(exc).__name__}: {exc}")
    if not isinstance(event, dict):
        return Seen(stream, entry_id, None, "not a JSON object")
    return Seen(stream, entry_id, event)


def follow(
    settings: MeshSettings, client: redis.Redis, positions: dict[str, str], *, block_ms: int = 1_000
) -> Iterator[Seen]:
    """Every entry added to the streams after ``positions`` (see :func:`stream_ends`), as they arrive,
    forever (XREAD BLOCK, no consumer group: nothing is acknowledged or taken from the services)."""
    cursor: dict[Any, Any] = dict(positions)
    while True:
        replies = _redis_call(settings, lambda: client.xread(cursor, count=100, block=block_ms))
        items = replies.items() if isinstance(replies, dict) else (replies or [])
        for raw_stream, entries in items:
            stream = _text(raw_stream)
            for raw_id, fields in entries:
                entry_id = _text(raw_id)
                cursor[stream] = entry_id
                yield decode_entry(stream, entry_id, fields)


# --- mesh status -------------------------------------------------------------------------------------

# A consumer that has not read for this long is a replica that went away (consumer names are per process).
ACTIVE_CONSUMER_IDLE_MS = 60_000


def service_health(settings: MeshSettings, http: httpx.Client, service: str) -> dict[str, Any]:
    """``service``'s readiness as its ``/readyz`` answers it: ready, not ready (and why), or unreachable."""
    url = service_url(settings, service)
    try:
        response = http.get(f"{url}/readyz")
    except httpx.HTTPError as exc:
        return {"service": service, "url": url, "state": "unreachable", "detail": type(exc).__name__}
    state = "ready" if response.status_code < 300 else "not ready"
    detail = "" if state == "ready" else response.text[:200]
    return {"service": service, "url": url, "state": state, "detail": detail}


def stream_groups(client: redis.Redis) -> list[dict[str, Any]]:
    """Each stream of the mesh with each consumer group reading it: its length, and per group the entries
    not yet delivered (``lag``), delivered but not acknowledged (``pending``) and the replicas reading."""
    rows = []
    for stream in events.ALL_STREAMS:
        name = str(stream)
        length = int(client.xlen(name))
        try:
            groups = client.xinfo_groups(name)
        except redis.ResponseError:  # no such stream yet: nothing was ever published to it
            groups = []
        for group in groups:
            group_name = _text(group["name"])
            consumers = client.xinfo_consumers(name, group_name)
            active = [c for c in consumers if int(c.get("idle", 0)) < ACTIVE_CONSUMER_IDLE_MS]
            lag = group.get("lag")
            rows.append(
                {
                    "stream": name,
                    "length": length,
                    "group": group_name,
                    "replicas": len(active),
                    "consumers": len(consumers),
                    "pending": int(group.get("pending", 0)),
                    "lag": int(lag) if lag is not None else None,  # None: Redis cannot tell (entries trimmed)
                }
            )
        if not groups:
            rows.append(
                {"stream": name, "length": length, "group": None, "replicas": 0, "consumers": 0,
                 "pending": 0, "lag": None}
            )  # fmt: skip
    return rows


def mesh_status(settings: MeshSettings, http: httpx.Client, client: redis.Redis) -> dict[str, Any]:
    """The whole mesh at a glance: each service's readiness and replicas, each stream's lag and pending per
    group, the dead letters, each model's champion, served version and the registry's last decision."""
    services = [service_health(settings, http, name) for name in SERVICE_NAMES]
    streams = _redis_call(settings, lambda: stream_groups(client))
    for service in services:  # a service's replicas: the live consumers of its own group
        groups = [row for row in streams if row["group"] == service["service"]]
        service["replicas"] = max((row["replicas"] for row in groups), default=None)
    models: list[dict[str, Any]] = []
    models_error: str | None = None
    try:
        models = list_models(settings, http)
    except OperateError as exc:  # serving or the registry down: the rest of the status still says much
        models_error = exc.message
    for model in models:
        model["last_decision"] = last_decision(settings, client, model["name"])
    dead = next((row["length"] for row in streams if row["stream"] == str(events.DEADLETTER)), 0)
    return {
        "redis": redis_location(settings.effective_redis_url),
        "services": services,
        "streams": streams,
        "dead_letters": dead,
        "models": models,
        "models_error": models_error,
    }
