"""Retention against the slowest group, on a real server: a stream over its cap is trimmed, but never
past an entry some group has yet to read or acknowledge (shared/bus/housekeeping.py)."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from shared import events
from shared.bus import MeshBus
from shared.bus.housekeeping import NODE_SLACK
from shared.bus.metrics import STREAM_OVER_CAP
from shared.events import Envelope, LabelObserved, new_event
from shared.runtime.retry import wait_for
from shared.runtime.settings import MeshSettings
from tests.support.buses import running

pytestmark = pytest.mark.integration

CAP = 100  # the least MESH_STREAM_MAXLEN allows
PUBLISHED = 10 * CAP
STREAM = events.LABELS


@pytest.fixture
def retention(settings: MeshSettings) -> MeshSettings:
    return settings.model_copy(update={"stream_maxlen": CAP, "bus_retention_interval_s": 0.2})


def labels(count: int) -> list[Envelope[LabelObserved]]:
    return [
        new_event(STREAM, LabelObserved(request_id=f"r{i}", label=1, observed_at="2026-01-01T00:00:00Z"))
        for i in range(count)
    ]


async def publish(bus: MeshBus, count: int) -> list[str]:
    """``count`` events on the stream, in a few pipelined rounds; their entry ids, oldest first."""
    before = {entry_id for entry_id, _ in await bus.redis.xrange(STREAM)}
    for start in range(0, count, CAP):
        await bus.publish_many(labels(min(CAP, count - start)))
    return [entry_id.decode() for entry_id, _ in await bus.redis.xrange(STREAM) if entry_id not in before]


async def ids_on_stream(client: aioredis.Redis) -> list[str]:
    return [entry_id.decode() for entry_id, _ in await client.xrange(STREAM)]


def key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


async def assert_nothing_needed_is_gone(client: aioredis.Redis, published: list[str]) -> None:
    """Every entry a group has not read yet, and every entry it read without acknowledging, is there."""
    present = set(await ids_on_stream(client))
    for group in await client.xinfo_groups(STREAM):
        name = group["name"].decode()
        last_delivered = key(group["last-delivered-id"].decode())
        unread = {i for i in published if key(i) > last_delivered}
        pending = await client.xpending_range(STREAM, name, min="-", max="+", count=len(published) + 1)
        unacknowledged = {p["message_id"].decode() for p in pending}
        assert unread <= present, f"{len(unread - present)} entries unread by {name} were trimmed"
        assert unacknowledged <= present, f"{len(unacknowledged - present)} pending in {name} were trimmed"


def over_cap_gauge() -> float | None:
    return REGISTRY.get_sample_value("mesh_stream_over_cap_entries", {"stream": STREAM})


def trimmed(reason: str) -> float:
    return (
        REGISTRY.get_sample_value("mesh_stream_trimmed_entries_total", {"stream": STREAM, "reason": reason})
        or 0
    )


async def passes_ended() -> None:
    """Until two more retention passes have ended (the gauge each sets), so the last one read the stream
    after the call: passes of the stream are one at a time, a lease apart."""
    for _ in range(2):
        STREAM_OVER_CAP.labels(STREAM).set(-1)  # only a pass overwrites it

        async def ended() -> bool:
            return over_cap_gauge() != -1

        await wait_for(ended, timeout=15, what="a retention pass")


async def test_lagging_groups_keep_every_entry_they_need_and_the_stream_shrinks_once_they_catch_up(
    retention: MeshSettings, redis_client: aioredis.Redis
) -> None:
    # Two groups of stopped services: one created and never read, one that read everything, acked nothing.
    for group in ("paused", "holding"):
        await redis_client.xgroup_create(STREAM, group, id="0", mkstream=True)
    producer = MeshBus(retention, "producer")
    async with running(producer):
        published = await publish(producer, PUBLISHED)
        read = await redis_client.xreadgroup("holding", "holding-1", {STREAM: ">"}, count=PUBLISHED)
        held = [entry_id.decode() for entry_id, _ in read[0][1]]
        assert held == published

        # Ten times the cap, and a pass has seen all of it: nothing may go, every entry is needed.
        await passes_ended()
        assert await ids_on_stream(redis_client) == published
        assert over_cap_gauge() == PUBLISHED - CAP
        await assert_nothing_needed_is_gone(redis_client, published)

        # "paused" catches up and acknowledges; "holding" acknowledges its first half only: the stream
        # may shrink to its oldest pending entry, never past it.
        caught_up = await redis_client.xreadgroup("paused", "paused-1", {STREAM: ">"}, count=PUBLISHED)
        await redis_client.xack(STREAM, "paused", *[entry_id for entry_id, _ in caught_up[0][1]])
        half = PUBLISHED // 2
        await redis_client.xack(STREAM, "holding", *held[:half])

        async def shrunk_to_the_oldest_pending() -> bool:
            return await redis_client.xlen(STREAM) <= half + NODE_SLACK

        await wait_for(
            shrunk_to_the_oldest_pending, timeout=15, what="the trim up to the oldest pending entry"
        )
        await assert_nothing_needed_is_gone(redis_client, published)
        assert (await ids_on_stream(redis_client))[-half:] == held[half:]
        length = await redis_client.xlen(STREAM)
        await passes_ended()  # and passes after that one trim no further
        assert await redis_client.xlen(STREAM) == length
        assert over_cap_gauge() == length - CAP

        # Everything acknowledged: back to about the cap, and not below it.
        await redis_client.xack(STREAM, "holding", *held[half:])

        async def back_to_the_cap() -> bool:
            return await redis_client.xlen(STREAM) <= CAP + NODE_SLACK

        await wait_for(back_to_the_cap, timeout=15, what="the stream back to its cap")
        assert await ids_on_stream(redis_client) == published[-await redis_client.xlen(STREAM) :]
        assert await redis_client.xlen(STREAM) >= CAP


async def test_a_group_reading_and_acknowledging_as_it_goes_lets_the_stream_stay_near_its_cap(
    retention: MeshSettings, redis_client: aioredis.Redis
) -> None:
    consumer = MeshBus(retention, "audit")
    seen: list[Any] = []

    async def handler(batch: list[Any]) -> None:
        seen.extend(batch)

    consumer.consume_batch(STREAM, handler)
    producer = MeshBus(retention, "producer")
    async with running(consumer, producer):
        published = await publish(producer, PUBLISHED)

        async def handled_and_trimmed() -> bool:
            return len(seen) == PUBLISHED and await redis_client.xlen(STREAM) <= CAP + NODE_SLACK

        await wait_for(handled_and_trimmed, timeout=30, what="every event handled and the stream trimmed")
    assert len({e.event_id for e in seen}) == PUBLISHED  # each once
    assert await ids_on_stream(redis_client) == published[-await redis_client.xlen(STREAM) :]
    assert await redis_client.xlen(STREAM) >= CAP


async def test_a_stream_with_no_group_yet_is_kept_to_its_cap_whatever_the_number_of_replicas(
    retention: MeshSettings, redis_client: aioredis.Redis
) -> None:
    replicas = [MeshBus(retention, "producer", consumer_name=f"producer-{i}") for i in range(3)]
    async with running(*replicas):
        published = await publish(replicas[0], PUBLISHED)
        for replica in replicas[1:]:  # every replica tends the stream: the lease gives each pass to one
            await replica.publish_many(labels(1))
        extra = len(replicas) - 1

        async def kept_to_the_cap() -> bool:
            return await redis_client.xlen(STREAM) <= CAP + NODE_SLACK

        await wait_for(kept_to_the_cap, timeout=15, what="the stream trimmed to its cap")
        length = await redis_client.xlen(STREAM)
        await passes_ended()
        assert await redis_client.xlen(STREAM) == length >= CAP  # no replica trimmed it below the cap
    kept = await ids_on_stream(redis_client)
    assert kept[:-extra] == published[-(length - extra) :]  # the oldest went, the newest stayed


async def test_the_hard_maxlen_valve_trims_past_a_stuck_group_and_counts_it(
    retention: MeshSettings, redis_client: aioredis.Redis
) -> None:
    hard = 3 * CAP
    await redis_client.xgroup_create(STREAM, "stuck", id="0", mkstream=True)
    before = trimmed("hard_maxlen")
    producer = MeshBus(retention.model_copy(update={"bus_stream_hard_maxlen": hard}), "producer")
    async with running(producer):
        await publish(producer, PUBLISHED)

        async def kept_to_the_hard_maxlen() -> bool:
            return await redis_client.xlen(STREAM) <= hard + NODE_SLACK

        await wait_for(kept_to_the_hard_maxlen, timeout=15, what="the valve to trim the stream")
        length = await redis_client.xlen(STREAM)
        await passes_ended()  # under the valve, the stuck group holds what is left
        assert await redis_client.xlen(STREAM) == length >= hard
        assert over_cap_gauge() == length - CAP
    assert trimmed("hard_maxlen") - before == PUBLISHED - length


def test_a_hard_maxlen_under_the_cap_is_refused(retention: MeshSettings) -> None:
    with pytest.raises(ValueError, match="MESH_BUS_STREAM_HARD_MAXLEN must exceed MESH_STREAM_MAXLEN"):
        MeshBus(retention.model_copy(update={"bus_stream_hard_maxlen": CAP}), "producer")


async def test_publishing_adds_no_round_trip_and_no_trim(
    retention: MeshSettings, redis_client: aioredis.Redis
) -> None:
    producer = MeshBus(retention.model_copy(update={"bus_retention_interval_s": 60}), "producer")
    async with running(producer):
        await redis_client.config_resetstat()
        await producer.publish_many(labels(10))
        for envelope in labels(10):
            await producer.publish(envelope)
        stats = await redis_client.info("commandstats")
    written = {
        name.removeprefix("cmdstat_"): int(v["calls"])
        for name, v in stats.items()
        if name.startswith("cmdstat_x")
    }
    assert written == {"xadd": 20}, written
