"""Bus benchmark: shared.bus against raw redis-py on the same server, in the same run.

Four figures, each with its baseline:

- **one hop** (control streams): read one event in a consumer group, decode it, publish the next event,
  ack. ``MeshBus.consume`` (contracts, idempotency marker, lease, trace headers; reading ahead behind a
  fast handler) vs raw redis-py doing one XREADGROUP, XADD and XACK round trip per event, and vs raw
  redis-py reading 50 entries per XREADGROUP as the mesh does here (a second baseline, no goal).
- **batch consume** (high-volume streams): ``MeshBus.consume_batch`` vs raw XREADGROUP count=500 with
  the acks pipelined.
- **dead letters** (a flood of malformed events): ``MeshBus.consume`` dead-lettering each (the letter
  with the original, stream, reason and attempts; reading ahead once it meets a malformed entry, the
  letters and acks of each read in one transaction) vs raw redis-py reading as many entries at a time
  and pipelining a minimal letter with each ack. Goal: >= 1,000 bad events/s.
- **idle polling**: Redis commands per second made by an idle consumer (read + reclaim) of
  ``MeshBus`` vs a FastStream stream subscriber with its defaults.

Usage: ``python -m bench.bus [--events 2000]``; ``make bench`` runs it. Starts its own valkey-server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from faststream.redis import RedisBroker, StreamSub
from rich.console import Console

from bench.report import write_result
from shared import events
from shared.bus import MeshBus, entry_body
from shared.events import DataIngested, Envelope, LabelObserved, RetrainRequested, Stream, new_event
from shared.ops.embedded import free_port, start_valkey
from shared.runtime.logging import configure_logging
from shared.runtime.settings import MeshSettings

HOP_FROM, HOP_TO = events.DATA_INGESTED, events.RETRAIN_REQUESTED
BATCH_STREAM = events.LABELS
# What the mesh reads at once behind this hop's handler (~1 ms an event, bus_read_ahead_wait_ms 50).
HOP_READ_AHEAD = 50
IDLE_STREAMS: tuple[Stream[Any], ...] = (events.MODEL_TRAINED, events.FEATURES_READY)


def _ingested(i: int) -> Envelope[Any]:
    payload = DataIngested(
        dataset="demo", snapshot_id=f"s{i}", path=f"/data/s{i}.parquet", row_count=100, schema_hash="h"
    )
    return new_event(HOP_FROM, payload)


def _label(i: int) -> Envelope[Any]:
    return new_event(
        BATCH_STREAM, LabelObserved(request_id=f"r{i}", label=i % 2, observed_at=datetime.now(UTC))
    )


async def _fill(client: aioredis.Redis, envelopes: list[Envelope[Any]]) -> None:
    pipe = client.pipeline(transaction=False)
    for event in envelopes:
        pipe.xadd(event.type, {"__data__": event.model_dump_json()})
    await pipe.execute()


async def _fill_malformed(client: aioredis.Redis, count: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        pipe.xadd(HOP_FROM, {"__data__": f"not json {i}"})  # no contract accepts it
    await pipe.execute()


async def _timed(
    until: Callable[[], Awaitable[bool]], run: Callable[[asyncio.Event], Awaitable[Any]] | None = None
) -> float:
    """Seconds until ``until()`` holds, polling every 20 ms, with ``run(stop)`` going on meanwhile until
    ``stop`` is set. A loop stops itself between reads: cancelling it inside a blocked redis-py read once
    left it reading on, and the benchmark waiting for it for good."""
    stop = asyncio.Event()
    task = asyncio.ensure_future(run(stop)) if run is not None else None
    started = time.perf_counter()
    while not await until():
        if task is not None and task.done():
            task.result()  # surfaces an error of the run instead of waiting forever
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - started
    stop.set()
    if task is not None:
        await asyncio.wait_for(task, timeout=10)  # one blocked read (1 s) at most
    return elapsed


async def raw_hop(client: aioredis.Redis, count: int, read_ahead: int = 1) -> float:
    """The hop hand-written: ``read_ahead`` entries per XREADGROUP (one, or as many as the mesh reads ahead
    behind fast handlers), then an XADD and an XACK round trip per event."""
    await client.xgroup_create(HOP_FROM, "raw", id="0", mkstream=True)

    async def loop(stop: asyncio.Event) -> None:
        while not stop.is_set():
            reply: Any = await client.xreadgroup("raw", "c1", {HOP_FROM: ">"}, count=read_ahead, block=1000)
            for _, entries in reply or []:
                for message_id, fields in entries:
                    event = json.loads(entry_body(fields))
                    nxt = new_event(
                        HOP_TO, RetrainRequested(dataset=event["payload"]["dataset"], reason="bench")
                    )
                    await client.xadd(HOP_TO, {"__data__": nxt.model_dump_json()})
                    await client.xack(HOP_FROM, "raw", message_id)

    return await _timed(lambda: _has(client, HOP_TO, count), loop)


async def mesh_hop(client: aioredis.Redis, settings: MeshSettings, count: int) -> float:
    bus = MeshBus(settings, "bench")

    async def forward(event: Envelope[Any]) -> None:
        await bus.emit(HOP_TO, RetrainRequested(dataset=event.payload.dataset, reason="bench"), cause=event)

    bus.consume(HOP_FROM, forward)
    await bus.start()
    try:
        return await _timed(lambda: _has(client, HOP_TO, count))
    finally:
        await bus.stop()


async def raw_batch(client: aioredis.Redis, count: int) -> float:
    await client.xgroup_create(BATCH_STREAM, "raw", id="0", mkstream=True)
    handled = 0

    async def loop(stop: asyncio.Event) -> None:
        nonlocal handled
        while not stop.is_set():
            reply: Any = await client.xreadgroup("raw", "c1", {BATCH_STREAM: ">"}, count=500, block=1000)
            for _, entries in reply or []:
                _ = [json.loads(entry_body(fields)) for _, fields in entries]
                await client.xack(BATCH_STREAM, "raw", *[message_id for message_id, _ in entries])
                handled += len(entries)

    async def done() -> bool:
        return handled >= count

    return await _timed(done, loop)


async def mesh_batch(settings: MeshSettings, count: int) -> float:
    bus = MeshBus(settings, "bench")
    handled = 0

    async def take(envelopes: list[Envelope[Any]]) -> None:
        nonlocal handled
        handled += len(envelopes)

    async def done() -> bool:
        return handled >= count

    bus.consume_batch(BATCH_STREAM, take)
    await bus.start()
    try:
        return await _timed(done)
    finally:
        await bus.stop()


async def raw_dead_letter(client: aioredis.Redis, count: int, read_ahead: int) -> float:
    """The hand-written floor: read as many entries at a time as the mesh reads ahead in a flood, then
    their dead letters and acks in one pipelined trip."""
    await client.xgroup_create(HOP_FROM, "raw", id="0", mkstream=True)

    async def loop(stop: asyncio.Event) -> None:
        while not stop.is_set():
            reply: Any = await client.xreadgroup("raw", "c1", {HOP_FROM: ">"}, count=read_ahead, block=1000)
            pipe = client.pipeline(transaction=True)
            for _, entries in reply or []:
                for message_id, fields in entries:
                    try:
                        json.loads(entry_body(fields))
                    except ValueError as exc:
                        pipe.xadd(events.DEADLETTER, {"__data__": json.dumps({"error": str(exc)})})
                        pipe.xack(HOP_FROM, "raw", message_id)
            await pipe.execute()

    return await _timed(lambda: _has(client, events.DEADLETTER, count), loop)


async def mesh_dead_letter(client: aioredis.Redis, settings: MeshSettings, count: int) -> float:
    bus = MeshBus(settings, "bench")
    bus.consume(HOP_FROM, _ignore)
    await bus.start()
    try:
        return await _timed(lambda: _has(client, events.DEADLETTER, count))
    finally:
        await bus.stop()


async def _has(client: aioredis.Redis, stream: str, count: int) -> bool:
    return int(await client.xlen(stream)) >= count


async def _commands(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("xreadgroup", "xautoclaim"))


async def idle_calls_per_s(
    client: aioredis.Redis, start: Callable[[], Awaitable[Any]], seconds: float
) -> float:
    stop = await start()
    await asyncio.sleep(1.0)  # past start-up
    before = await _commands(client)
    await asyncio.sleep(seconds)
    calls = await _commands(client) - before
    await stop()
    return calls / seconds / len(IDLE_STREAMS)


async def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="mesh-bench-bus-"))
    port = free_port()
    server = start_valkey(port, root / "valkey", root / "valkey.log", persistent=False)
    settings = MeshSettings(redis_port=port, state_dir=root / "state")
    client = aioredis.from_url(settings.effective_redis_url)
    result: dict[str, Any] = {}
    try:
        figures: dict[str, dict[str, float]] = {}
        for name, count, fill, contenders in (
            ("one_hop", args.events, _ingested,
             {"raw_redis_py": lambda: raw_hop(client, args.events),
              "raw_redis_py_read_ahead": lambda: raw_hop(client, args.events, HOP_READ_AHEAD),
              "mesh_bus": lambda: mesh_hop(client, settings, args.events)}),
            ("batch_consume", args.batch_events, _label,
             {"raw_redis_py": lambda: raw_batch(client, args.batch_events),
              "mesh_bus": lambda: mesh_batch(settings, args.batch_events)}),
            ("dead_letter", args.bad_events, None,
             {"raw_redis_py": lambda: raw_dead_letter(client, args.bad_events, settings.bus_read_ahead),
              "mesh_bus": lambda: mesh_dead_letter(client, settings, args.bad_events)}),
        ):  # fmt: skip
            figures[name] = {}
            for contender, measure in contenders.items():
                await client.flushall()
                if fill is None:
                    await _fill_malformed(client, count)
                else:
                    await _fill(client, [fill(i) for i in range(count)])
                seconds = await measure()
                figures[name][contender] = round(count / seconds, 1)
                console.print(f"{name:>14} {contender:>13}: {count / seconds:9.1f} events/s")
            figures[name]["ratio"] = round(figures[name]["mesh_bus"] / figures[name]["raw_redis_py"], 3)
        figures["one_hop"]["read_ahead"] = HOP_READ_AHEAD
        result["events_per_s"] = figures

        await client.flushall()

        async def start_mesh() -> Callable[[], Awaitable[None]]:
            bus = MeshBus(settings, "bench")
            for stream in IDLE_STREAMS:
                bus.consume(stream, _ignore)
            await bus.start()
            return bus.stop

        async def start_faststream() -> Callable[[], Awaitable[None]]:
            broker = RedisBroker(settings.effective_redis_url)
            for stream in IDLE_STREAMS:
                broker.subscriber(stream=StreamSub(stream, group="fs", consumer="c1"))(_ignore)
            await broker.start()
            return broker.stop

        idle = {
            "mesh_bus": await idle_calls_per_s(client, start_mesh, args.idle_seconds),
            "faststream_defaults": await idle_calls_per_s(client, start_faststream, args.idle_seconds),
        }
        console.print(f"idle read+reclaim calls/s per consumed stream: {idle}")
        result["idle_calls_per_s_per_stream"] = {k: round(v, 2) for k, v in idle.items()}
        result["idle_limit_per_s"] = 0.2
        result["goal_ratio"] = 0.8  # one hop and batch consume, against raw redis-py
        result["goal_dead_letters_per_s"] = 1000
        result["events"] = {
            "one_hop": args.events,
            "batch_consume": args.batch_events,
            "dead_letter": args.bad_events,
        }
    finally:
        await client.aclose()
        server.terminate()
        server.wait(timeout=10)
    return result


async def _ignore(_: Any) -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="events through one hop")
    parser.add_argument("--batch-events", type=int, default=50_000, help="events through batch consume")
    parser.add_argument("--bad-events", type=int, default=3_000, help="malformed events dead-lettered")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()
    configure_logging("bench", "WARNING")
    console = Console(stderr=True)
    result = asyncio.run(run(args, console))
    result["what"] = "shared.bus vs raw redis-py (and FastStream defaults when idle), same valkey-server"
    path = write_result("bus", result)
    console.print(f"-> {path}")


if __name__ == "__main__":
    main()
