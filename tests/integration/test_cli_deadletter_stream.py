"""``mesh deadletter`` against a real server: the session's valkey, dead letters written by a real
``MeshBus`` consumer giving up on real entries, and the CLI (in a thread, so the consumer in this event
loop keeps consuming) listing, showing, replaying and purging them.

The consumer ``audit`` reads ``labels`` and ``ingest.requested``. It is given a malformed labels entry
(not JSON), a labels event its handler rejects while "the bug" is there (a PermanentError), and an
ingest.requested entry of the wrong type: three letters. With the bug fixed, the rejected event passes
its contract and is handled on replay; the malformed one is refused, and written only with --force (the
consumer dead-letters it again)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner, Result

from shared import events
from shared.bus import MeshBus, PermanentError, entry_body
from shared.events import Envelope, LabelObserved, new_event, parse_event
from shared.ops.cli import app
from shared.ops.deadletters import REPLAYED_KEY
from shared.runtime.retry import wait_for
from shared.runtime.settings import MeshSettings
from tests.support.cli import logs_kept_apart

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

OBSERVED = datetime(2026, 1, 1, tzinfo=UTC)
NOT_JSON = '{"event_id": "broken", not json'
WRONG_TYPE = new_event(events.LABELS, LabelObserved(request_id="x", label=1, observed_at=OBSERVED))


@contextlib.asynccontextmanager
async def running(bus: MeshBus) -> AsyncIterator[None]:
    await bus.start()
    try:
        yield
    finally:
        await bus.stop()


async def letters(client: aioredis.Redis, at_least: int) -> list[tuple[str, Any]]:
    """(letter id, letter) for each letter on the deadletter stream, once there are ``at_least``."""

    async def enough() -> list[tuple[str, Any]] | None:
        entries: Any = await client.xrange(events.DEADLETTER)
        found = [
            (raw_id.decode(), parse_event(entry_body(fields), events.DEADLETTER))
            for raw_id, fields in entries
        ]
        return found if len(found) >= at_least else None

    result: list[tuple[str, Any]] = await wait_for(enough, timeout=20, what=f"{at_least} dead letter(s)")
    return result


@pytest.fixture(autouse=True)
def _logs_kept_apart() -> Iterator[None]:
    with logs_kept_apart():
        yield


async def test_deadletters_are_listed_shown_replayed_once_and_purged(
    settings: MeshSettings, redis_client: aioredis.Redis
) -> None:
    env = {
        "MESH_REDIS_URL": settings.effective_redis_url,
        "MESH_STATE_DIR": str(settings.state_dir),
    }

    async def mesh(*args: str, stdin: str | None = None) -> Result:
        return await asyncio.to_thread(CliRunner().invoke, app, ["deadletter", *args], env=env, input=stdin)

    async def ok(*args: str, stdin: str | None = None) -> Result:
        result = await mesh(*args, stdin=stdin)
        assert result.exit_code == 0, result.output
        return result

    bug = {"there": True}
    handled: list[Envelope[LabelObserved]] = []

    async def on_label(event: Envelope[LabelObserved]) -> None:
        if bug["there"]:
            raise PermanentError(f"cannot read label of {event.payload.request_id}")
        handled.append(event)

    async def on_ingest(event: Any) -> None:
        raise AssertionError("no valid ingest.requested event is sent")

    # Nothing here is about reclaiming: with the suite's 1 s reclaim idle, a busy machine stalling this
    # process for a second would let the sweep redeliver an entry before its first delivery is handled,
    # and the letter would count two attempts.
    bus = MeshBus(settings.model_copy(update={"bus_reclaim_idle_ms": 30_000}), "audit")
    bus.consume(events.LABELS, on_label)
    bus.consume(events.INGEST_REQUESTED, on_ingest)
    rejected = new_event(events.LABELS, LabelObserved(request_id="r1", label=1, observed_at=OBSERVED))
    async with running(bus):
        await redis_client.xadd(events.LABELS, {"__data__": NOT_JSON})
        await redis_client.xadd(events.INGEST_REQUESTED, {"__data__": WRONG_TYPE.model_dump_json()})
        await bus.publish(rejected)
        found = await letters(redis_client, 3)
        ids = {which(letter): letter_id for letter_id, letter in found}
        not_json, wrong_type, refused = ids["not json"], ids["wrong type"], ids["rejected"]

        # list: newest first, counted per original stream and error kind
        listing = json.loads((await ok("list", "--json")).stdout)
        assert listing["total"] == 3 and [row["id"] for row in listing["letters"]] == [
            letter_id for letter_id, _ in reversed(found)
        ]
        assert {(c["stream"], c["error_kind"]): c["count"] for c in listing["counts"]} == {
            ("labels", "invalid event"): 1,
            ("labels", "rejected"): 1,
            ("ingest.requested", "invalid event"): 1,
        }
        row = next(r for r in listing["letters"] if r["id"] == refused)
        assert row["group"] == "audit" and row["attempts"] == 1 and row["replayed_as"] is None
        only_labels = json.loads((await ok("list", "--stream", "labels", "--limit", "1", "--json")).stdout)
        assert only_labels["total"] == 2 and [r["id"] for r in only_labels["letters"]] == [
            max((not_json, refused), key=lambda i: tuple(map(int, i.split("-"))))
        ]
        since = json.loads((await ok("list", "--since", found[0][0], "--json")).stdout)
        assert since["total"] == 2
        table = (await ok("list")).stdout
        assert "3 dead letter(s)" in table and refused in table and "ingest.requested" in table

        # show: the original message as written
        shown = json.loads((await ok("show", not_json, "--json")).stdout)
        assert shown["original"] == NOT_JSON and shown["contract_now"].startswith("message: not valid JSON")
        shown = json.loads((await ok("show", refused, "--json")).stdout)
        assert shown["original"] == rejected.model_dump_json() and shown["contract_now"] == "passes"
        assert shown["letter"]["causation_id"] == rejected.event_id
        assert NOT_JSON in (await ok("show", not_json)).stdout
        missing = await mesh("show", "1-0")
        assert missing.exit_code == 2 and "no dead letter 1-0" in missing.output

        # replay: refused while the contract refuses it, nothing written
        labels_before = await redis_client.xlen(events.LABELS)
        for args in ([not_json, refused], [wrong_type], ["--stream", "labels"]):
            result = await mesh("replay", *args)
            assert result.exit_code == 2, result.output
            assert "nothing was written" in result.output
        assert "not valid JSON" in result.output
        assert await redis_client.xlen(events.LABELS) == labels_before
        assert not await redis_client.exists(REPLAYED_KEY)

        # the bug fixed, the rejected event is replayed and handled; once
        bug["there"] = False
        new_id = (await ok("replay", refused)).stdout.strip()

        async def replayed() -> bool:
            return bool(handled)

        await wait_for(replayed, timeout=20, what="the replayed event handled")
        assert [event.event_id for event in handled] == [rejected.event_id]
        assert (await redis_client.hget(REPLAYED_KEY, refused)) == new_id.encode()
        again = await mesh("replay", refused)
        assert again.exit_code == 2 and f"replayed already, as {new_id}" in again.output
        row = json.loads((await ok("list", "--json")).stdout)["letters"]
        assert {r["id"]: r["replayed_as"] for r in row}[refused] == new_id

        # forced, the malformed entry goes back, and the consumer dead-letters it again
        forced = json.loads((await ok("replay", "--stream", "labels", "--force", "--json")).stdout)
        assert [(r["id"], r["stream"]) for r in forced] == [(not_json, "labels")]
        fourth_id, fourth = (await letters(redis_client, 4))[-1]
        assert fourth.payload.original == NOT_JSON and fourth.payload.message_id == forced[0]["entry_id"]
        # the replayed letters are not chosen again; the new one is, and refused
        rest = await mesh("replay", "--stream", "labels")
        assert rest.exit_code == 2 and "1 letter(s) cannot be replayed" in rest.output
        assert fourth_id in rest.output and not_json not in rest.output

    # purge: asks first; removes the letters older than the bound, and their replay records
    kept = (await letters(redis_client, 4))[2][0]
    declined = await mesh("purge", "--before", kept, stdin="n\n")
    assert declined.exit_code == 1 and await redis_client.xlen(events.DEADLETTER) == 4
    purged = await ok("purge", "--before", kept, stdin="y\n")
    assert purged.stdout.strip().splitlines()[-1] == "2"
    assert await redis_client.xlen(events.DEADLETTER) == 2
    assert (await ok("purge", "--older-than", "1h", "--yes")).stdout.strip() == "0"
    assert (await ok("purge", "--older-than", "0s", "--yes")).stdout.strip() == "2"
    assert await redis_client.xlen(events.DEADLETTER) == 0
    assert not await redis_client.exists(REPLAYED_KEY)


def which(letter: Envelope[Any]) -> str:
    """Which of the test's three letters this is."""
    if letter.payload.stream == events.INGEST_REQUESTED:
        return "wrong type"
    return "rejected" if letter.payload.error.startswith("cannot read label") else "not json"
