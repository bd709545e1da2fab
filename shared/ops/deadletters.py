"""Reading and acting on the ``deadletter`` stream: what ``mesh deadletter`` does, without the printing.

A dead letter is an entry of the ``deadletter`` stream written by the bus (shared/bus/delivery.py
``dead_letter``): a ``DeadLetter`` envelope naming the original stream, the group that gave up, the entry
id it had there, the error, the attempts, and the original message body as it was received. Letters are
named here by their entry id on the ``deadletter`` stream (``1700000000000-0``).

Replaying a letter XADDs its original body back on its stream as the bus writes plain entries
(``__data__``: the body; no cap on write: the bus's retention trims behind the slowest group), only when
the body passes the stream's contract now (``parse_event``), unless forced. Each replay is recorded in the
hash ``REPLAYED_KEY`` (letter id -> new entry id), checked and written in the same server-side script as
the XADD, so a letter is never replayed twice, not even by two operators at once.

Every function takes the ``redis.Redis`` client it uses; failures are ``OperateError``s carrying the exit
code (shared/ops/operate.py): 1 when Redis cannot be reached, 2 for an invalid request found before
anything was written (an unknown letter, one already replayed, a body its contract refuses).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from shared import events
from shared.events import ContractError, parse_event
from shared.ops.operate import EXIT_INVALID, OperateError, Unreachable, redis_location, stream_named

REPLAYED_KEY = "mesh:deadletter:replayed"
PAGE = 500  # entries per XRANGE/XREVRANGE round trip

ENTRY_ID = re.compile(r"^\d+(-\d+)?$")
DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)$")
DURATION_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
HANDLER_ERROR = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Timeout)):")

# XADD the body on its stream and record it, unless the letter was replayed already (then: nil).
# KEYS: the replayed hash, the stream; ARGV: letter id, body.
_REPLAY_SCRIPT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return false
end
local id = redis.call('XADD', KEYS[2], '*', '__data__', ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], id)
return id
"""


@dataclass(frozen=True)
class Letter:
    """One entry of the ``deadletter`` stream; ``problem`` says why it is not a readable letter, if not."""

    entry_id: str
    event: dict[str, Any] | None = None
    problem: str | None = None
    replayed_as: str | None = None

    @property
    def payload(self) -> dict[str, Any]:
        payload = (self.event or {}).get("payload")
        return payload if isinstance(payload, dict) else {}

    @property
    def stream(self) -> str | None:
        return self.payload.get("stream")

    @property
    def original(self) -> str:
        return str(self.payload.get("original", ""))

    @property
    def error_kind(self) -> str:
        return error_kind(self.payload.get("error")) if self.problem is None else "unreadable letter"

    @property
    def when(self) -> str:
        """When it was dead-lettered: the letter's ``occurred_at``, else the entry id's time."""
        occurred = (self.event or {}).get("occurred_at")
        if occurred:
            return str(occurred)
        millis = int(self.entry_id.partition("-")[0])
        return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(millis / 1000))

    def summary(self) -> dict[str, Any]:
        """The letter's row in a listing."""
        return {
            "id": self.entry_id,
            "stream": self.stream,
            "group": self.payload.get("group"),
            "message_id": self.payload.get("message_id"),
            "error": self.payload.get("error", self.problem),
            "error_kind": self.error_kind,
            "attempts": self.payload.get("attempts"),
            "when": self.when,
            "replayed_as": self.replayed_as,
        }


@dataclass
class Selection:
    """The letters chosen for a replay: what would be written (``ready``) and what was refused."""

    ready: list[Letter] = field(default_factory=list)
    refused: list[tuple[Letter | str, str]] = field(default_factory=list)


# --- reading -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def reaching(client: redis.Redis) -> Iterator[None]:
    """Redis not answering, as :class:`Unreachable` naming where it was looked for."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        kwargs = client.connection_pool.connection_kwargs
        if "path" in kwargs:
            url = f"unix://{kwargs['path']}"
        else:
            url = f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
        raise Unreachable("redis", redis_location(url), exc) from None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def entry_id(text: str, what: str = "ID") -> str:
    """A stream entry id as given (``MILLIS`` or ``MILLIS-SEQ``); exit 2 when it is none."""
    text = text.strip()
    if not ENTRY_ID.match(text):
        raise OperateError(
            f"{what}: {text!r} is not a stream entry id (MILLIS-SEQ, e.g. 1700000000000-0)",
            exit_code=EXIT_INVALID,
        )
    return text


def duration_ms(text: str) -> int:
    """``90s``, ``15m``, ``12h``, ``7d``, ``2w``, ``500ms`` in milliseconds; exit 2 otherwise."""
    match = DURATION.match(text.strip().lower())
    if not match:
        raise OperateError(
            f"--older-than: {text!r} is not a duration (a number and one of ms, s, m, h, d, w; e.g. 7d)",
            exit_code=EXIT_INVALID,
        )
    return int(float(match.group(1)) * DURATION_UNITS_MS[match.group(2)])


def error_kind(error: Any) -> str:
    """The kind of a letter's error, for counting: ``invalid event`` (its contract refused it), ``gave up``
    (its attempts ran out, the consumer died), the exception type a handler raised, else ``rejected`` (a
    handler's PermanentError)."""
    text = str(error or "")
    if text.startswith("invalid event:"):
        return "invalid event"
    if text.startswith("gave up:"):
        return "gave up"
    match = HANDLER_ERROR.match(text)
    return match.group(1) if match else "rejected"


def read_letter(raw_id: bytes | str, fields: Any, replayed: dict[str, str]) -> Letter:
    """One ``deadletter`` entry, read through the DeadLetter contract."""
    from shared.bus import entry_body

    letter_id = _text(raw_id)
    try:
        envelope = parse_event(entry_body(fields), events.DEADLETTER)
    except (ContractError, KeyError, ValueError) as exc:
        return Letter(letter_id, None, f"not a dead letter: {exc}", replayed.get(letter_id))
    return Letter(letter_id, envelope.model_dump(mode="json"), None, replayed.get(letter_id))


def replayed_ids(client: redis.Redis) -> dict[str, str]:
    """Letter id -> the entry id its replay got, for every letter replayed."""
    raw: Any = client.hgetall(REPLAYED_KEY)
    return {_text(k): _text(v) for k, v in raw.items()}


def scan(client: redis.Redis, *, newest: str = "+", oldest: str = "-") -> Iterator[tuple[Any, Any]]:
    """The ``deadletter`` entries from ``newest`` back to ``oldest`` (inclusive ids), newest first."""
    upper = newest
    while True:
        entries: Any = client.xrevrange(events.DEADLETTER, max=upper, min=oldest, count=PAGE)
        yield from entries
        if len(entries) < PAGE:
            return
        upper = f"({_text(entries[-1][0])}"


def list_letters(
    client: redis.Redis, *, stream: str | None = None, since: str | None = None, limit: int = 50
) -> dict[str, Any]:
    """The letters newest first (at most ``limit``; all of them counted), from ``stream`` only if given,
    after entry id ``since`` (exclusive) if given; with a count per original stream and error kind."""
    if stream is not None:
        stream = str(stream_named(stream))
    oldest = f"({entry_id(since, '--since')}" if since else "-"
    rows: list[dict[str, Any]] = []
    counts: Counter[tuple[str, str]] = Counter()
    total = 0
    with reaching(client):
        replayed = replayed_ids(client)
        for raw_id, fields in scan(client, oldest=oldest):
            letter = read_letter(raw_id, fields, replayed)
            if stream is not None and letter.stream != stream:
                continue
            total += 1
            counts[(letter.stream or "?", letter.error_kind)] += 1
            if len(rows) < limit:
                rows.append(letter.summary())
    return {
        "total": total,
        "shown": len(rows),
        "counts": [
            {"stream": s, "error_kind": kind, "count": n}
            for (s, kind), n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        ],
        "letters": rows,
    }


def get_letter(client: redis.Redis, letter_id: str) -> Letter:
    """The letter with that entry id; exit 2 when there is none."""
    letter_id = entry_id(letter_id)
    with reaching(client):
        entries: Any = client.xrange(events.DEADLETTER, min=letter_id, max=letter_id, count=1)
        if not entries:
            raise OperateError(f"no dead letter {letter_id} on the deadletter stream", exit_code=EXIT_INVALID)
        replayed = _text(found) if (found := client.hget(REPLAYED_KEY, letter_id)) else None
    [(raw_id, fields)] = entries
    return read_letter(raw_id, fields, {letter_id: replayed} if replayed else {})


def contract_error(letter: Letter) -> str | None:
    """Why the letter's original body would not pass its stream's contract now; None when it would."""
    if letter.problem is not None:
        return letter.problem
    stream = events.STREAMS_BY_NAME.get(letter.stream or "")
    if stream is None:
        return f"its stream {letter.stream!r} is no stream of the mesh"
    try:
        parse_event(letter.original, stream)
    except ContractError as exc:
        return str(exc)
    return None


def show_letter(client: redis.Redis, letter_id: str) -> dict[str, Any]:
    """One letter in full: the envelope, the payload, the original message as written, and whether the
    original passes its contract now."""
    letter = get_letter(client, letter_id)
    return {
        **letter.summary(),
        "letter": letter.event,
        "problem": letter.problem,
        "original": letter.original if letter.problem is None else None,
        "contract_now": contract_error(letter) or "passes",
    }


# --- replaying ---------------------------------------------------------------------------------------


def select_for_replay(
    client: redis.Redis,
    ids: Sequence[str] = (),
    *,
    stream: str | None = None,
    every: bool = False,
    force: bool = False,
) -> Selection:
    """The letters to replay: those named by ``ids``; or every letter not replayed yet, from ``stream`` if
    given (``every``: from any stream). A named letter that is unknown or was replayed already is
    refused; so is any letter whose original fails its contract now, unless ``force`` (then only a
    letter with no body or no stream of the mesh is)."""
    if bool(ids) == (stream is not None or every):
        raise OperateError(
            "name the letters to replay: letter IDs, or --stream STREAM, or --all", exit_code=EXIT_INVALID
        )
    if stream is not None:
        stream = str(stream_named(stream))
    selection = Selection()
    chosen: list[Letter] = []
    if ids:
        for letter_id in dict.fromkeys(entry_id(i) for i in ids):
            try:
                letter = get_letter(client, letter_id)
            except OperateError as exc:
                if exc.exit_code != EXIT_INVALID:
                    raise
                selection.refused.append((letter_id, exc.message))
                continue
            if letter.replayed_as:
                selection.refused.append((letter, f"replayed already, as {letter.replayed_as}"))
            else:
                chosen.append(letter)
    else:
        with reaching(client):
            replayed = replayed_ids(client)
            for raw_id, fields in scan(client):
                letter = read_letter(raw_id, fields, replayed)
                if letter.replayed_as or (stream is not None and letter.stream != stream):
                    continue
                chosen.append(letter)
        chosen.reverse()  # oldest first: replayed in the order they first arrived
    for letter in chosen:
        problem = contract_error(letter)
        unwritable = letter.problem is not None or letter.stream not in events.STREAMS_BY_NAME
        if problem is not None and (unwritable or not force):
            selection.refused.append((letter, problem))
        else:
            selection.ready.append(letter)
    return selection


def replay(client: redis.Redis, letters: Sequence[Letter]) -> list[dict[str, Any]]:
    """XADD each letter's original body back on its stream, recording the replay; per letter, the new
    entry id (``None`` when someone else replayed it meanwhile: nothing was written for it)."""
    script = client.register_script(_REPLAY_SCRIPT)
    results = []
    with reaching(client):
        for letter in letters:
            assert letter.stream is not None
            keys = [REPLAYED_KEY, letter.stream]
            new_id = script(keys=keys, args=[letter.entry_id, letter.original])
            results.append(
                {
                    "id": letter.entry_id,
                    "stream": letter.stream,
                    "entry_id": _text(new_id) if new_id else None,
                }
            )
    return results


# --- purging -----------------------------------------------------------------------------------------


def purge_bound(before: str | None, older_than: str | None, *, now_ms: int | None = None) -> str:
    """The entry id letters older than which are purged: ``before`` itself, or now less ``older_than``."""
    if (before is None) == (older_than is None):
        raise OperateError("give exactly one of --before and --older-than", exit_code=EXIT_INVALID)
    if before is not None:
        return entry_id(before, "--before")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return f"{max(now - duration_ms(older_than or ''), 0)}-0"


def purgeable(client: redis.Redis, bound: str) -> list[str]:
    """The ids of the letters older than ``bound`` (exclusive)."""
    with reaching(client):
        return [_text(raw_id) for raw_id, _ in scan(client, newest=f"({bound}")] if bound != "0-0" else []


def purge(client: redis.Redis, bound: str, ids: Sequence[str]) -> int:
    """Remove the letters older than ``bound`` (XTRIM MINID, exact) and the replay records of ``ids``
    (those letters, see :func:`purgeable`); how many letters were removed."""
    with reaching(client):
        removed = int(client.xtrim(events.DEADLETTER, minid=bound, approximate=False))
        for start in range(0, len(ids), PAGE):
            client.hdel(REPLAYED_KEY, *ids[start : start + PAGE])
    return removed
