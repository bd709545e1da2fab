"""Housekeeping of the bus on a real server: consumers of dead processes are removed once nothing is
pending in their name, and no entry's last error outlives the entry (shared/bus/housekeeping.py)."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from shared import events
from shared.bus import MeshBus
from shared.events import LabelObserved, new_event
from shared.runtime.retry import wait_for
from shared.runtime.settings import MeshSettings
from tests.support.buses import running

pytestmark = pytest.mark.integration

STREAM = events.LABELS


def label(request_id: str) -> Any:
    return new_event(
        STREAM, LabelObserved(request_id=request_id, label=1, observed_at="2026-01-01T00:00:00Z")
    )


async def consumer_names(client: aioredis.Redis, group: str) -> set[str]:
    return {c["name"].decode() for c in await client.xinfo_consumers(STREAM, group)}


def removed(group: str) -> float:
    sample = REGISTRY.get_sample_value(
        "mesh_bus_dead_consumers_removed_total", {"stream": STREAM, "group": group}
    )
    return sample or 0


async def test_consumers_of_dead_processes_go_once_nothing_is_pending_in_their_name(
    settings: MeshSettings, redis_client: aioredis.Redis
) -> None:
    # Dead after 1.5 s of idleness (the test's reclaim idle is 1 s, its blocking read 0.2 s).
    timings = settings.model_copy(update={"bus_dead_consumer_after_s": 1.5, "bus_retention_interval_s": 0.2})
    await redis_client.xgroup_create(STREAM, "audit", id="0", mkstream=True)
    # Two earlier processes of the service, both killed: one holding an entry, one with nothing pending.
    event = label("held-by-the-dead")
    producer = MeshBus(timings, "producer")  # tends the stream it publishes to, as any publisher does
    before = removed("audit")
    async with running(producer):
        await producer.publish(event)
        await redis_client.xreadgroup("audit", "audit-killed-holding", {STREAM: ">"}, count=1)
        await redis_client.xgroup_createconsumer(STREAM, "audit", "audit-killed-idle")

        async def idle_one_removed() -> bool:
            return "audit-killed-idle" not in await consumer_names(redis_client, "audit")

        await wait_for(idle_one_removed, timeout=15, what="the dead consumer with nothing pending removed")
        # The one holding an entry, dead longer, is kept: no live consumer of the group has reclaimed it yet.
        [holding] = await redis_client.xinfo_consumers(STREAM, "audit")
        assert holding["name"] == b"audit-killed-holding" and holding["pending"] == 1
        assert holding["idle"] > timings.bus_dead_consumer_after_s * 1000

        # The service is back: it reclaims the entry, and the dead consumer goes once it holds nothing.
        live = MeshBus(timings, "audit", consumer_name="audit-live")
        seen: list[Any] = []

        async def handler(envelope: Any) -> None:
            seen.append(envelope)

        live.consume(STREAM, handler)
        async with running(live):

            async def only_the_live_consumer_left() -> bool:
                return await consumer_names(redis_client, "audit") == {"audit-live"}

            await wait_for(only_the_live_consumer_left, timeout=30, what="the dead consumers removed")
            info = {g["name"].decode(): g for g in await redis_client.xinfo_groups(STREAM)}["audit"]
    assert [e.event_id for e in seen] == [event.event_id]  # reclaimed from the dead, handled, acknowledged
    assert info["pending"] == 0 and info["lag"] == 0
    assert removed("audit") - before == 2


def test_a_dead_consumer_bound_a_live_consumer_could_reach_is_refused(settings: MeshSettings) -> None:
    for too_short in (
        {"bus_dead_consumer_after_s": 1.0, "bus_block_ms": 2_000},
        {"bus_dead_consumer_after_s": 1.0, "bus_reclaim_idle_ms": 1_000},
    ):
        with pytest.raises(ValueError, match="MESH_BUS_DEAD_CONSUMER_AFTER_S must exceed"):
            MeshBus(settings.model_copy(update=too_short), "audit")


async def test_an_error_left_for_an_entry_no_longer_pending_is_removed_and_a_pending_ones_kept(
    settings: MeshSettings, redis_client: aioredis.Redis
) -> None:
    # A long reclaim idle: both entries stay pending with their first error for the whole test.
    timings = {"bus_reclaim_idle_ms": 60_000, "bus_max_attempts": 10, "bus_retention_interval_s": 0.2}
    bus = MeshBus(settings.model_copy(update=timings), "flaky")

    async def fail(_: Any) -> None:
        raise RuntimeError("still failing")

    bus.consume(STREAM, fail)
    errors = "mesh:errors:labels:flaky"
    async with running(bus):
        for request_id in ("acknowledged-by-hand", "still-pending"):
            await bus.publish(label(request_id))

        async def both_failed() -> list[bytes] | None:
            ids: list[bytes] = await redis_client.hkeys(errors)
            return sorted(ids) if len(ids) == 2 else None

        by_hand, still_pending = await wait_for(both_failed, timeout=15, what="two errors noted")
        await redis_client.xack(STREAM, "flaky", by_hand)  # an operator's XACK: the bus never sees it

        async def only_the_pending_error_left() -> bool:
            return await redis_client.hkeys(errors) == [still_pending]

        await wait_for(only_the_pending_error_left, timeout=15, what="the stale error removed")
        assert await redis_client.hget(errors, still_pending) == b"RuntimeError: still failing"


async def test_no_error_outlives_an_entry_dead_lettered_or_skipped_as_a_duplicate(
    settings: MeshSettings, redis_client: aioredis.Redis
) -> None:
    # No housekeeping pass during the test: delivery itself must clean up after each outcome.
    timings = {"bus_max_attempts": 2, "bus_retention_interval_s": 600}
    bus = MeshBus(settings.model_copy(update=timings), "flaky")
    duplicate = label("published-twice")
    attempts: dict[str, int] = {}

    async def handler(event: Any) -> None:
        request_id = event.payload.request_id
        attempts[request_id] = attempts.get(request_id, 0) + 1
        # The first copy of the duplicate fails; the second copy succeeds: the first, redelivered, is then
        # skipped as already done.
        if request_id == "doomed" or (request_id == "published-twice" and attempts[request_id] == 1):
            raise RuntimeError(f"boom on {request_id}")

    bus.consume(STREAM, handler)
    async with running(bus):
        await bus.publish(duplicate)
        await bus.publish(label("doomed"))
        await bus.publish(duplicate)

        async def drained_and_dead_lettered() -> bool:
            info = {g["name"].decode(): g for g in await redis_client.xinfo_groups(STREAM)}["flaky"]
            letters = await redis_client.xlen(events.DEADLETTER)
            return info["pending"] == 0 and info["lag"] == 0 and letters == 1

        await wait_for(drained_and_dead_lettered, timeout=30, what="the group drained, one dead letter")
    assert attempts == {"published-twice": 2, "doomed": 2}
    assert not await redis_client.exists("mesh:errors:labels:flaky")
