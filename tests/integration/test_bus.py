"""Delivery guarantees of shared.bus that need a real Redis-compatible server: with real services, a
subprocess killed mid-handler, the server's own command counts. The rules themselves are tested on both
backends in test_bus_delivery.py."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from services.ingest.app import create_app
from shared import events
from shared.bus import MeshBus
from shared.events import IngestRequested, ModelPromoted, new_event
from shared.runtime.retry import wait_for
from shared.runtime.settings import REPO_ROOT, MeshSettings
from tests.support.data import demo_csv
from tests.support.servers import serve
from tests.support.streams import stream_events

pytestmark = pytest.mark.integration


async def _xreadgroup_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_xreadgroup", {}).get("calls", 0))


async def _publish_requests(client: aioredis.Redis, files: list[Path]) -> list[str]:
    ids = []
    pipe = client.pipeline(transaction=False)
    for path in files:
        event = new_event(events.INGEST_REQUESTED, IngestRequested(dataset="demo", uri=str(path)))
        ids.append(event.event_id)
        pipe.xadd(events.INGEST_REQUESTED, {"__data__": event.model_dump_json()})
    await pipe.execute()
    return ids


def _batch_files(root: Path, count: int, rows: int = 3) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for seed in range(count):
        path = root / f"batch-{seed:04d}.csv"
        path.write_bytes(demo_csv(rows, seed=seed))
        files.append(path)
    return files


async def test_a_backlog_published_before_the_service_first_starts_is_all_handled(
    settings: MeshSettings, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    files = _batch_files(settings.effective_data_root / "batches", 1000)
    await _publish_requests(redis_client, files)
    assert await redis_client.xlen(events.INGEST_REQUESTED) == 1000

    async with serve(create_app(settings)):

        async def all_handled() -> bool:
            # An entry is acked just after its event is published: wait for both, not the events alone.
            groups = {g["name"].decode(): g for g in await redis_client.xinfo_groups(events.INGEST_REQUESTED)}
            return (
                await redis_client.xlen(events.DATA_INGESTED) >= 1000
                and groups["ingest"]["pending"] == 0
                and groups["ingest"]["lag"] == 0
            )

        await wait_for(all_handled, timeout=120, what="1000 requests handled and acked")
    assert await redis_client.xlen(events.DATA_INGESTED) == 1000
    snapshots = {e.payload.snapshot_id for e in await stream_events(redis_client, events.DATA_INGESTED)}
    assert len(snapshots) == 1000
    assert await redis_client.xlen(events.DEADLETTER) == 0


async def test_an_event_whose_consumer_is_killed_before_ack_is_redelivered_to_another(
    settings: MeshSettings, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    marker = tmp_path / "taken"
    env = {
        **os.environ,
        "MESH_REDIS_PORT": str(settings.redis_port),
        "MESH_BUS_BLOCK_MS": "200",
        "MESH_BUS_RECLAIM_IDLE_MS": str(settings.bus_reclaim_idle_ms),
        "MESH_LOG_LEVEL": "WARNING",
    }
    doomed = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("stuck_consumer.py")), str(marker)],
        env=env,
        cwd=REPO_ROOT,
        start_new_session=True,
    )
    try:
        # The doomed consumer must own its group before the event exists, so it is the one to take it.
        await wait_for(
            lambda: redis_client.exists(events.INGEST_REQUESTED),
            timeout=30,
            what="the doomed consumer's group",
        )
        [request_id] = await _publish_requests(
            redis_client, _batch_files(settings.effective_data_root / "one", 1)
        )

        async def taken() -> bool:
            return marker.exists()

        await wait_for(taken, timeout=30, what="the doomed consumer to take the event")
        assert marker.read_text() == request_id
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=10)

    pending = await redis_client.xpending_range(events.INGEST_REQUESTED, "ingest", min="-", max="+", count=10)
    assert [p["consumer"] for p in pending] == [b"ingest-doomed"]

    async with serve(create_app(settings)):
        envelopes = await wait_for(
            lambda: stream_events(redis_client, events.DATA_INGESTED), timeout=30, what="redelivery"
        )
        # Give a second (wrong) delivery the chance to show up before asserting there was exactly one.
        await asyncio.sleep(settings.bus_reclaim_idle_ms / 1000 * 2)
        envelopes = await stream_events(redis_client, events.DATA_INGESTED)
    assert len(envelopes) == 1
    assert envelopes[0].causation_id == request_id
    assert (await redis_client.xpending(events.INGEST_REQUESTED, "ingest"))["pending"] == 0


async def test_after_redis_loses_its_data_the_service_recreates_its_group_and_goes_on(
    settings: MeshSettings, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    files = _batch_files(settings.effective_data_root / "batches", 2)
    async with serve(create_app(settings)):
        await _publish_requests(redis_client, files[:1])
        await wait_for(lambda: redis_client.xlen(events.DATA_INGESTED), timeout=10, what="first event")

        await redis_client.flushall()
        await redis_client.config_resetstat()

        async def group_back() -> bool:
            groups = (
                await redis_client.xinfo_groups(events.INGEST_REQUESTED)
                if await redis_client.exists(events.INGEST_REQUESTED)
                else []
            )
            return any(g["name"] == b"ingest" for g in groups)

        await wait_for(group_back, timeout=15, what="the group to be recreated")
        await _publish_requests(redis_client, files[1:])
        envelopes = await wait_for(
            lambda: stream_events(redis_client, events.DATA_INGESTED), timeout=15, what="event after flush"
        )
        assert envelopes[0].payload.row_count == 3

        # No tight retry loop: over a quiet window the service makes a bounded number of calls.
        await redis_client.config_resetstat()
        window = 3.0
        await asyncio.sleep(window)
        stats = await redis_client.info("commandstats")
    calls = sum(int(v["calls"]) for v in stats.values())
    # One blocking read per bus_block_ms, one reclaim sweep per interval, one PING per readiness
    # check: tens per second at the test's short timings, never thousands.
    per_second = calls / window
    assert per_second < 40, stats


async def test_idle_consumers_do_not_busy_poll(
    redis_port: int, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    defaults = MeshSettings(redis_port=redis_port, state_dir=tmp_path)  # production timings
    bus = MeshBus(defaults, "idle")

    async def never(_: Any) -> None:
        raise AssertionError("no events were published")

    for stream in (events.LABELS, events.PREDICTIONS, events.MODEL_PROMOTED):
        bus.consume(stream, never)
    await bus.start()
    try:
        await redis_client.config_resetstat()
        window = 5.0
        await asyncio.sleep(window)
        calls = await _xreadgroup_calls(redis_client)
    finally:
        await bus.stop()
    # At the defaults one read per 10 s per stream: at most one more per stream for where the window falls.
    assert calls <= 3 * (window / (defaults.bus_block_ms / 1000) + 1), (
        f"{calls} XREADGROUP calls in {window}s"
    )


async def test_a_listener_idle_longer_than_a_reply_timeout_still_hears_the_next_event(
    redis_port: int, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    # Production timings: a 10 s blocking read. redis-py gives up on a reply after 5 s by default; were
    # the bus's clients left at that, the idle read would fail at 5 s, FastStream would back off 5 s, and
    # a broadcast (read from "$") published meanwhile would never reach this listener.
    defaults = MeshSettings(redis_port=redis_port, state_dir=tmp_path)
    bus = MeshBus(defaults, "listener")
    heard: list[str] = []

    async def on_promoted(event: Any) -> None:
        heard.append(event.event_id)

    bus.listen(events.MODEL_PROMOTED, on_promoted)
    await bus.start()
    try:
        await asyncio.sleep(7.0)  # idle past the 5 s default, inside the 10 s block
        promotion = ModelPromoted(
            model_name="m",
            version="1",
            run_id="r",
            model_uri="models:/m/1",
            feature_set_id="f",
            snapshot_ids=[],
        )
        promoted = new_event(events.MODEL_PROMOTED, promotion)
        await redis_client.xadd(events.MODEL_PROMOTED, {"__data__": promoted.model_dump_json()})

        async def arrived() -> list[str]:
            return heard

        await wait_for(arrived, timeout=3, what="the promotion")
    finally:
        await bus.stop()
    assert heard == [promoted.event_id]
