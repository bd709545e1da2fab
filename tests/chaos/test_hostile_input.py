"""A flood of malformed and hostile entries written straight onto every consumed stream of a running
stack, as a broken or foreign producer (or ``redis-cli``) would, while good uploads go through.

Each entry must land in ``deadletter`` once per consumer group with its stream, group and reason; none
may stay pending; no service may die; the good uploads must still get through, and the report says how
long they took beside the same uploads on a quiet stack."""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from shared import events
from shared.ops.demo_data import generate
from shared.ops.driver import MeshDriver
from shared.ops.processes import StateFiles, alive
from shared.runtime.settings import SERVICE_NAMES
from tests.support.groups import entry_ms, groups_by_stream, letter_counts, letters, wait_drained
from tests.support.stack import running_stack, stack_settings

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1200)]

FLOOD = 10_000  # hostile entries in all, spread over the consumed streams
HUGE_PER_STREAM = 3  # 1 MB entries: enough to show they are refused, not so many the letters fill memory
GOOD_UPLOADS = 4


def hostile_bodies(stream: str) -> list[tuple[str, dict[str, bytes]]]:
    """(kind, entry fields) of each kind of entry no contract accepts, for ``stream``."""
    other = next(s for s in events.ALL_STREAMS if s != stream)
    envelope = {"event_id": "e", "correlation_id": "c", "occurred_at": "2026-01-01T00:00:00Z"}

    def data(body: Any) -> dict[str, bytes]:
        return {"__data__": body if isinstance(body, bytes) else json.dumps(body).encode()}

    return [
        ("not json", data(b"{not json")),
        ("deeply nested", data(b"[" * 50_000 + b"]" * 50_000)),
        ("invalid utf-8", data(b'{"type": "\xff\xfe\xfa"}')),
        ("random bytes", data(os.urandom(64))),
        ("not an object", data(b"[1, 2, 3]")),
        ("null", data(b"null")),
        ("wrong type", data({**envelope, "type": str(other), "payload": {}})),
        ("missing fields", data({"type": stream})),
        ("unknown schema version", data({**envelope, "type": stream, "schema_version": 99, "payload": {}})),
        ("wrong field types", data({**envelope, "type": stream, "correlation_id": 7, "payload": []})),
        ("no data field", {"payload": b"{}"}),
        ("foreign framing", data({"data": "{}", "headers": 5})),
        ("truncated binary framing", data(b"\x89BIN\x0d\x0a\x1a\x0a\x00\x01\x00")),
        ("binary framing past its end", data(b"\x89BIN\x0d\x0a\x1a\x0a\x00\x01" + b"\x7f\xff\xff\xff" * 2)),
        ("empty", data(b"")),
    ]


def flood(driver: MeshDriver, streams: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Write the hostile entries, round robin over their kinds; per stream, (entry id, kind) of each."""
    per_stream = -(-FLOOD // len(streams))
    written: dict[str, list[tuple[str, str]]] = {}
    for stream in streams:
        kinds = hostile_bodies(stream)
        pipe = driver.redis.pipeline(transaction=False)
        chosen = [kinds[i % len(kinds)] for i in range(per_stream - HUGE_PER_STREAM)]
        huge = {"__data__": json.dumps({"type": stream, "payload": {"blob": "x" * 1_000_000}}).encode()}
        chosen += [("huge", huge)] * HUGE_PER_STREAM
        for _, fields in chosen:
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
        ids = [raw.decode() for raw in pipe.execute()]
        written[stream] = [(entry_id, kind) for entry_id, (kind, _) in zip(ids, chosen, strict=True)]
    return written


def upload_until_built(driver: MeshDriver, seed: int) -> float:
    """Seconds from uploading a new batch to the feature set built from it."""
    started = time.monotonic()
    ingested = driver.upload(generate(rows=300, seed=seed))

    def built() -> bool:
        return any(e.causation_id == ingested["event_id"] for e in driver.events(events.FEATURES_READY))

    driver.wait_for(f"the feature set of upload {seed}", lambda: built() or None)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshDriver]:
    with running_stack(stack_settings(tmp_path_factory.mktemp("hostile"))) as driver:
        yield driver


def test_a_flood_of_hostile_entries_is_dead_lettered_and_good_uploads_go_on(
    stack: MeshDriver, chaos_report: dict[str, Any]
) -> None:
    quiet = [upload_until_built(stack, seed) for seed in range(1, 1 + GOOD_UPLOADS)]
    consumed = groups_by_stream(stack.redis)
    streams = sorted(consumed)
    assert {str(events.INGEST_REQUESTED), str(events.LABELS), str(events.PREDICTIONS)} <= set(streams)

    # First the flood alone, for the rate the stack dead-letters at; then again beside good uploads, whose
    # trainings then share the two cores with it.
    wait_drained(stack.redis, timeout=600)  # the quiet uploads' trainings and decisions done
    alone_ms = int(time.time() * 1000)
    alone = flood(stack, streams)
    wait_drained(stack.redis, timeout=600)

    during: list[float] = []
    seeds = range(100, 100 + GOOD_UPLOADS)
    uploads = threading.Thread(target=lambda: during.extend(upload_until_built(stack, s) for s in seeds))
    started_ms = int(time.time() * 1000)
    uploads.start()
    written = flood(stack, streams)
    uploads.join(timeout=600)
    behind = wait_drained(stack.redis, timeout=600)

    found = letters(stack.redis)

    def letters_of(flooded: dict[str, list[tuple[str, str]]]) -> list[tuple[str, dict[str, Any]]]:
        ours = {(stream, entry_id) for stream, entries in flooded.items() for entry_id, _ in entries}
        return [(i, letter) for i, letter in found if (letter["stream"], letter["message_id"]) in ours]

    def rate(of: list[tuple[str, dict[str, Any]]], since_ms: int) -> int:
        last_ms = max((entry_ms(i) for i, _ in of), default=since_ms)
        return round(len(of) / max((last_ms - since_ms) / 1000, 1e-3))

    alone_letters = letters_of(alone)
    hostile_letters = letters_of(written)
    refused = [letter for _, letter in alone_letters + hostile_letters]
    once = {(letter["stream"], letter["group"], letter["message_id"]) for letter in refused}
    counts = letter_counts(alone_letters + hostile_letters)
    expected = {(s, g): len(written[s]) + len(alone[s]) for s in streams for g in consumed[s]}
    records = StateFiles(stack.settings).records()
    dead = [name for name in SERVICE_NAMES if name not in records or not alive(records[name])]
    sent = sum(len(entries) for flooded in (alone, written) for entries in flooded.values())
    chaos_report["hostile_flood"] = {
        "hostile_entries": sent,
        "streams": {s: {"entries": len(written[s]) + len(alone[s]), "groups": consumed[s]} for s in streams},
        "floods": 2,
        "dead_lettered": len(refused),
        "expected_letters": sum(expected.values()),
        "letters_per_s": rate(alone_letters, alone_ms),
        "letters_per_s_beside_uploads": rate(hostile_letters, started_ms),
        "still_pending_or_unread": [g.__dict__ for g in behind],
        "services_dead": dead,
        "good_upload_to_features_s": {
            "quiet_median": round(statistics.median(quiet), 2),
            "during_flood_median": round(statistics.median(during), 2) if during else None,
            "during_flood_max": round(max(during), 2) if during else None,
        },
        "letters_by_attempts": dict(Counter(f"{x['stream']}/{x['group']}: {x['attempts']}" for x in refused)),
        "entries_dead_lettered_twice": len(refused) - len(once),
        "reasons": sorted({letter["error"].split(":")[0] + ": " + letter["error"].split(":")[1].strip()[:40]
                           for _, letter in hostile_letters}),
    }  # fmt: skip

    assert not dead, f"services died under the flood: {dead}"
    assert not behind, f"entries left pending or unread: {behind}"
    assert len(during) == GOOD_UPLOADS, "good uploads did not get through during the flood"
    assert dict(counts) == expected
    assert all(letter["attempts"] == 1 and letter["error"].startswith("invalid event") for letter in refused)
    assert len(once) == len(refused), "an entry was dead-lettered twice"
