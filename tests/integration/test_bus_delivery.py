"""The bus's delivery rules, written once and run twice: on the in-memory twin and on a real server.

Each test gets a ``Backend``: the connection its buses share and a client of the same Redis for the
assertions, ``memory`` (``shared.bus.testing``) or ``redis`` (the session's valkey-server, flushed). The
``redis`` run is the reference; the ``memory`` run shows the twin keeps the same semantics, so a test
built on it can be trusted. Tests that need a service app or a subprocess are in test_bus.py.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import events
from shared.bus import MeshBus, PermanentError, RedisConnection
from shared.bus.testing import memory_connection
from shared.events import Envelope, IngestRequested, LabelObserved, Stream, new_event
from shared.runtime.retry import wait_for
from shared.runtime.settings import MeshSettings
from tests.support.buses import running
from tests.support.streams import stream_events

pytestmark = pytest.mark.integration

# Where nothing listens: a memory test whose bus reached Redis around its connection fails instead of
# quietly using the real server.
NOWHERE = "redis://127.0.0.1:1/0"


@dataclass
class Backend:
    """What a test's buses share: how they reach Redis, and a client of that Redis for the assertions."""

    connection: RedisConnection
    client: aioredis.Redis
    settings: MeshSettings

    def bus(
        self,
        service: str,
        *,
        consumer_name: str | None = None,
        tracer_provider: TracerProvider | None = None,
        **timings: Any,
    ) -> MeshBus:
        """A bus of ``service``; ``timings`` override the test's settings (bus_* fields)."""
        settings = self.settings.model_copy(update=timings) if timings else self.settings
        return MeshBus(
            settings,
            service,
            consumer_name=consumer_name,
            connection=self.connection,
            tracer_provider=tracer_provider,
        )

    @property
    def real(self) -> bool:
        """A real server (which counts the commands it ran), not the twin."""
        return self.settings.redis_url != NOWHERE


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, settings: MeshSettings) -> AsyncIterator[Backend]:
    if request.param == "memory":
        connection = memory_connection()
        settings = settings.model_copy(update={"redis_url": NOWHERE})
    else:
        connection = RedisConnection(settings.effective_redis_url)
    client = connection.client()
    await client.flushall()  # each test starts from an empty server
    yield Backend(connection, client, settings)
    await client.aclose()


def collect(into: list[Any]) -> Callable[[Any], Awaitable[None]]:
    """A handler that keeps every event it is given."""

    async def handler(event: Any) -> None:
        into.append(event)

    return handler


async def until(condition: Callable[[], bool], what: str) -> None:
    async def check() -> bool:
        return condition()

    await wait_for(check, timeout=15, what=what)


def label(request_id: str) -> LabelObserved:
    return LabelObserved(request_id=request_id, label=1, observed_at="2026-01-01T00:00:00Z")


def labels(count: int) -> list[Envelope[LabelObserved]]:
    return [new_event(events.LABELS, label(f"r{i}")) for i in range(count)]


async def group_info(client: aioredis.Redis, stream: Stream[Any], group: str) -> dict[str, Any]:
    groups = {g["name"].decode(): g for g in await client.xinfo_groups(stream)}
    return dict(groups[group])


async def wait_drained(client: aioredis.Redis, stream: Stream[Any], group: str) -> None:
    """Until the group has read every entry and acknowledged each (an ack follows its handler's return)."""

    async def drained() -> bool:
        info = await group_info(client, stream, group)
        return info["lag"] == 0 and info["pending"] == 0

    await wait_for(drained, timeout=15, what=f"group {group} to drain {stream}")


async def dead_letters(client: aioredis.Redis, at_least: int = 1) -> list[Any]:
    async def enough() -> list[Any] | None:
        letters = await stream_events(client, events.DEADLETTER)
        return letters if len(letters) >= at_least else None

    result: list[Any] = await wait_for(enough, timeout=30, what=f"{at_least} dead letter(s)")
    return result


async def test_a_handled_event_is_acknowledged_and_marked_done(backend: Backend) -> None:
    bus = backend.bus("audit")
    seen: list[Any] = []
    bus.consume(events.LABELS, collect(seen))
    async with running(bus):
        event = await bus.emit(events.LABELS, label("r"))
        await wait_drained(backend.client, events.LABELS, "audit")
    assert seen == [event]
    assert await backend.client.exists(f"mesh:done:audit:{event.event_id}")
    assert await backend.client.xlen(events.DEADLETTER) == 0


async def test_a_failed_event_is_redelivered_after_the_idle_time_with_a_growing_attempt_count(
    backend: Backend,
) -> None:
    bus = backend.bus("flaky")
    deliveries: list[tuple[float, int]] = []  # (when, times delivered as XPENDING counts it)

    async def handler(event: Any) -> None:
        [pending] = await backend.client.xpending_range(events.LABELS, "flaky", min="-", max="+", count=1)
        deliveries.append((time.monotonic(), pending["times_delivered"]))
        if len(deliveries) < backend.settings.bus_max_attempts:
            raise RuntimeError("not yet")

    bus.consume(events.LABELS, handler)
    async with running(bus):
        await bus.emit(events.LABELS, label("r"))
        await until(lambda: len(deliveries) == backend.settings.bus_max_attempts, "the last attempt")
        await wait_drained(backend.client, events.LABELS, "flaky")
    assert [count for _, count in deliveries] == [1, 2, 3]
    idle_s = backend.settings.bus_reclaim_idle_ms / 1000
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(deliveries)]
    # Not before the entry was idle that long (less the few ms between its delivery and its handler).
    assert all(gap >= idle_s * 0.9 for gap in gaps), gaps
    assert not await backend.client.exists("mesh:errors:labels:flaky")  # its last error, kept until success
    assert await backend.client.xlen(events.DEADLETTER) == 0


async def test_a_failing_handler_is_retried_then_dead_lettered_with_its_error(backend: Backend) -> None:
    bus = backend.bus("flaky")
    attempts: dict[str, int] = {}

    async def handler(event: Any) -> None:
        request_id = event.payload.request_id
        attempts[request_id] = attempts.get(request_id, 0) + 1
        if request_id == "always" or attempts[request_id] < 2:
            raise RuntimeError(f"boom on {request_id}")

    bus.consume(events.LABELS, handler)
    async with running(bus):
        for request_id in ("once", "always"):
            await bus.emit(events.LABELS, label(request_id))
        letters = await dead_letters(backend.client)
        await wait_drained(backend.client, events.LABELS, "flaky")
    assert attempts == {"once": 2, "always": backend.settings.bus_max_attempts}
    [letter] = letters
    assert letter.payload.stream == events.LABELS and letter.payload.group == "flaky"
    assert letter.payload.attempts == backend.settings.bus_max_attempts
    assert letter.payload.error == "RuntimeError: boom on always"
    assert '"request_id":"always"' in letter.payload.original


async def test_a_permanent_error_is_dead_lettered_at_once(backend: Backend) -> None:
    bus = backend.bus("ingest")
    calls: list[str] = []

    async def handler(event: Any) -> None:
        calls.append(event.event_id)
        raise PermanentError(f"no such file: {event.payload.uri}")

    bus.consume(events.INGEST_REQUESTED, handler)
    async with running(bus):
        request = await bus.emit(events.INGEST_REQUESTED, IngestRequested(dataset="demo", uri="/gone.csv"))
        [letter] = await dead_letters(backend.client)
        await wait_drained(backend.client, events.INGEST_REQUESTED, "ingest")
    assert calls == [request.event_id]
    assert letter.payload.attempts == 1 and letter.payload.error == "no such file: /gone.csv"
    assert letter.causation_id == request.event_id and letter.correlation_id == request.correlation_id


_LABEL = '"payload":{"request_id":"r","label":1,"observed_at":"2026-01-01T00:00:00Z"}'
# Raw entry bodies as a broken or foreign producer would write them, and the reason each is refused for.
INVALID_ENTRIES = {
    "not-json": ("{not json", "invalid event: message: not valid JSON"),
    "wrong-type": (
        '{"event_id":"e1","type":"predictions","correlation_id":"c1",' + _LABEL + "}",
        "invalid event: type: 'predictions' does not belong on stream 'labels'",
    ),
    "deeply-nested": ("[" * 100_000, "invalid event: message: JSON nested too deeply"),
    "missing-field": (
        '{"event_id":"e1","type":"labels",' + _LABEL + "}",
        "invalid event: correlation_id: Field required",
    ),
}


@pytest.mark.parametrize("case", INVALID_ENTRIES)
async def test_an_invalid_entry_is_dead_lettered_with_the_reason(backend: Backend, case: str) -> None:
    raw, reason = INVALID_ENTRIES[case]
    bus = backend.bus("audit")
    calls: list[Any] = []
    bus.consume(events.LABELS, collect(calls))
    message_id = (await backend.client.xadd(events.LABELS, {"__data__": raw})).decode()
    async with running(bus):
        [letter] = await dead_letters(backend.client)
        await wait_drained(backend.client, events.LABELS, "audit")
    assert calls == []
    assert letter.payload.error.startswith(reason), letter.payload.error
    assert letter.payload.original == raw and letter.payload.message_id == message_id
    assert letter.payload.attempts == 1 and letter.causation_id is None


async def test_a_redelivered_event_is_handled_once(backend: Backend) -> None:
    bus = backend.bus("once")
    seen: list[str] = []

    async def handler(event: Any) -> None:
        seen.append(event.event_id)

    bus.consume(events.LABELS, handler)
    async with running(bus):
        event = new_event(events.LABELS, label("r"))
        await bus.publish(event)
        await bus.publish(event)  # at-least-once upstream: the same event twice
        await bus.emit(events.LABELS, label("r2"))
        await wait_drained(backend.client, events.LABELS, "once")
    assert seen.count(event.event_id) == 1 and len(seen) == 2


async def test_a_new_group_drains_the_backlog_published_before_it_existed(backend: Backend) -> None:
    backlog = labels(20)
    publisher = backend.bus("serving")
    async with running(publisher):
        for envelope in backlog:
            await publisher.publish(envelope)
    bus = backend.bus("audit")
    seen: list[Any] = []
    bus.consume(events.LABELS, collect(seen))
    async with running(bus):
        await wait_drained(backend.client, events.LABELS, "audit")
    assert seen == backlog


async def test_consume_batch_handles_many_entries_in_one_call_and_acknowledges_them(
    backend: Backend,
) -> None:
    backlog = labels(50)
    bus = backend.bus("monitor")
    batches: list[list[str]] = []

    async def handler(batch: list[Any]) -> None:
        batches.append([e.event_id for e in batch])

    bus.consume_batch(events.LABELS, handler)
    await bus.publish_many(backlog)
    async with running(bus):
        await wait_drained(backend.client, events.LABELS, "monitor")
    assert batches == [[e.event_id for e in backlog]]  # the whole backlog: one read, one call, one ack


async def test_an_invalid_entry_in_a_batch_is_dead_lettered_alone(backend: Backend) -> None:
    good = labels(5)
    bus = backend.bus("monitor")
    handled: list[str] = []

    async def handler(batch: list[Any]) -> None:
        handled.extend(e.event_id for e in batch)

    bus.consume_batch(events.LABELS, handler)
    await bus.publish_many(good[:2])
    poison_id = (await backend.client.xadd(events.LABELS, {"__data__": "{not json"})).decode()
    await bus.publish_many(good[2:])
    async with running(bus):
        [letter] = await dead_letters(backend.client)
        await wait_drained(backend.client, events.LABELS, "monitor")
    assert handled == [e.event_id for e in good]
    assert letter.payload.message_id == poison_id and letter.payload.attempts == 1
    assert letter.payload.error.startswith("invalid event: message: not valid JSON")


async def test_a_batch_whose_handler_fails_is_retried_one_by_one_so_its_poison_goes_alone(
    backend: Backend,
) -> None:
    backlog = [*labels(3), new_event(events.LABELS, label("poison"))]
    bus = backend.bus("monitor")
    handled: list[str] = []

    async def handler(batch: list[Any]) -> None:
        if any(e.payload.request_id == "poison" for e in batch):
            raise RuntimeError("poison in the batch")
        handled.extend(e.payload.request_id for e in batch)

    bus.consume_batch(events.LABELS, handler)
    await bus.publish_many(backlog)
    async with running(bus):
        [letter] = await dead_letters(backend.client)
        await wait_drained(backend.client, events.LABELS, "monitor")
    assert sorted(handled) == ["r0", "r1", "r2"]
    assert letter.causation_id == backlog[-1].event_id
    assert letter.payload.error == "RuntimeError: poison in the batch"
    assert letter.payload.attempts == backend.settings.bus_max_attempts


async def test_a_broadcast_reaches_every_listener_and_starts_at_the_end(backend: Backend) -> None:
    workers = [backend.bus("serving", consumer_name=f"serving-{i}") for i in range(2)]
    heard: list[list[Any]] = [[], []]
    for worker, inbox in zip(workers, heard, strict=True):
        worker.listen(events.LABELS, collect(inbox))
    publisher = backend.bus("registry")
    async with running(publisher):
        await publisher.emit(events.LABELS, label("before"))
        async with running(*workers):
            sent = 0

            # A listener reads from the stream's end as of its first read: send until both have heard one.
            async def both_heard() -> bool:
                nonlocal sent
                await publisher.emit(events.LABELS, label(f"after-{sent}"))
                sent += 1
                return all(heard)

            await wait_for(both_heard, timeout=15, what="both listeners to hear a broadcast")
    for inbox in heard:
        # Nothing from before the start; from its first event on, every one in order, none twice.
        received = [e.payload.request_id for e in inbox]
        first = int(received[0].removeprefix("after-"))
        assert received == [f"after-{i}" for i in range(first, first + len(received))], received
    assert await backend.client.xinfo_groups(events.LABELS) == []  # listeners read without a group


async def test_an_emitted_event_continues_the_chain_of_its_cause(backend: Backend) -> None:
    bus = backend.bus("ingest")

    async def handler(request: Any) -> None:
        await bus.emit(events.LABELS, label(request.payload.uri), cause=request)

    bus.consume(events.INGEST_REQUESTED, handler)
    async with running(bus):
        request = await bus.emit(events.INGEST_REQUESTED, IngestRequested(dataset="demo", uri="/a.csv"))
        [emitted] = await wait_for(
            lambda: stream_events(backend.client, events.LABELS), timeout=15, what="the emitted event"
        )
    assert emitted.correlation_id == request.correlation_id
    assert emitted.causation_id == request.event_id
    # Derived from its cause: a redelivered request would re-emit this very event.
    assert emitted.event_id == new_event(events.LABELS, label("/a.csv"), cause=request).event_id


async def test_publish_many_writes_entries_every_consumer_reads(backend: Backend) -> None:
    sent = labels(30)
    bus = backend.bus("audit")
    seen: list[Any] = []
    bus.consume(events.LABELS, collect(seen))
    async with running(bus):
        await bus.publish_many(sent)
        await wait_drained(backend.client, events.LABELS, "audit")
    assert seen == sent
    assert await backend.client.xlen(events.LABELS) == len(sent)


async def test_an_entry_left_unacknowledged_by_a_stopped_consumer_is_reclaimed_by_another(
    backend: Backend,
) -> None:
    # The doomed consumer stops without waiting for its handler: the entry stays pending in its name.
    doomed = backend.bus("audit", consumer_name="audit-doomed", bus_graceful_timeout_s=0.1)
    taken = asyncio.Event()

    async def hang(_: Any) -> None:
        taken.set()
        await asyncio.Event().wait()

    doomed.consume(events.LABELS, hang)
    async with running(doomed):
        event = await doomed.emit(events.LABELS, label("r"))
        await asyncio.wait_for(taken.wait(), timeout=15)
    pending = await backend.client.xpending_range(events.LABELS, "audit", min="-", max="+", count=10)
    assert [p["consumer"] for p in pending] == [b"audit-doomed"]

    survivor = backend.bus("audit", consumer_name="audit-survivor")
    seen: list[Any] = []
    survivor.consume(events.LABELS, collect(seen))
    async with running(survivor):
        await wait_drained(backend.client, events.LABELS, "audit")
    assert seen == [event]


async def test_a_handler_slower_than_the_idle_time_keeps_its_entry(backend: Backend) -> None:
    # Two consumers of one group: the lease keeps the slow one's entry from the other's sweep.
    buses = [backend.bus("audit", consumer_name=f"audit-{i}") for i in range(2)]
    calls: list[str] = []

    async def slow(event: Any) -> None:
        calls.append(event.event_id)
        await asyncio.sleep(backend.settings.bus_reclaim_idle_ms / 1000 * 2.5)

    for bus in buses:
        bus.consume(events.LABELS, slow)
    async with running(*buses):
        await buses[0].emit(events.LABELS, label("r"))
        await wait_drained(backend.client, events.LABELS, "audit")
    assert len(calls) == 1


async def test_after_the_data_is_lost_the_bus_recreates_its_group_and_goes_on(backend: Backend) -> None:
    bus = backend.bus("audit")
    seen: list[Any] = []
    bus.consume(events.LABELS, collect(seen))
    async with running(bus):
        await bus.emit(events.LABELS, label("before"))
        await wait_drained(backend.client, events.LABELS, "audit")
        await backend.client.flushall()  # NOGROUP for every read from now on

        async def group_back() -> bool:
            groups = (
                await backend.client.xinfo_groups(events.LABELS)
                if await backend.client.exists(events.LABELS)
                else []
            )
            return any(g["name"] == b"audit" for g in groups)

        await wait_for(group_back, timeout=15, what="the group to be recreated")
        await bus.emit(events.LABELS, label("after"))
        await until(lambda: len(seen) == 2, "an event after the loss")
    assert [e.payload.request_id for e in seen] == ["before", "after"]


async def test_an_idle_bus_does_not_busy_poll(backend: Backend) -> None:
    # Production timings (1 s blocking reads): with the twin, this process also does the server's work.
    bus = backend.bus("idle", bus_block_ms=1_000, bus_reclaim_interval_ms=5_000)

    async def never(_: Any) -> None:
        raise AssertionError("no events were published")

    for stream in (events.LABELS, events.PREDICTIONS, events.MODEL_PROMOTED):
        bus.consume(stream, never)
    async with running(bus):
        window = 3.0
        cpu = time.process_time()
        await asyncio.sleep(window)
        cpu = time.process_time() - cpu
    assert cpu / window < 0.1, f"{cpu:.2f}s of CPU in {window}s for 3 idle consumers"


# Entries FastStream's own decoding cannot read: the mesh must still see them, count and dead-letter them.
UNREADABLE_ENTRIES: dict[str, dict[bytes, bytes]] = {
    "no-data-field": {b"foo": b"bar"},
    "not-utf8": {b"__data__": b"\xff\xfe\xfa"},
    "truncated-binary": {b"__data__": b"\x89BIN\x0d\x0a\x1a\x0a\x00\x01\x00"},
    "empty": {b"__data__": b""},
    "json-format-bad-headers": {b"__data__": b'{"data": "x", "headers": 5}'},
    "json-format-data-number": {b"__data__": b'{"data": 1, "headers": {}}'},
    "json-format-headers-null": {b"__data__": b'{"data": "{}", "headers": null}'},
    "binary-huge-offsets": {
        b"__data__": b"\x89BIN\x0d\x0a\x1a\x0a\x00\x01\x7f\xff\xff\xff\x7f\xff\xff\xff\x00\x05"
    },
    "two-data-fields": {b"__data__": b"{}", b"correlation_id": b"\xff"},
}


@pytest.mark.parametrize("case", UNREADABLE_ENTRIES)
@pytest.mark.parametrize("batch", [False, True], ids=["one", "batch"])
async def test_an_entry_the_broker_cannot_decode_is_dead_lettered_not_left_pending(
    backend: Backend, case: str, batch: bool
) -> None:
    # Reclaiming after a long idle: a sweep redelivering the entry must not be what rescues it.
    bus = backend.bus("audit", bus_reclaim_idle_ms=60_000)
    calls: list[Any] = []
    if batch:
        bus.consume_batch(events.LABELS, collect(calls))
    else:
        bus.consume(events.LABELS, collect(calls))
    message_id = (await backend.client.xadd(events.LABELS, UNREADABLE_ENTRIES[case])).decode()
    async with running(bus):
        [letter] = await dead_letters(backend.client)
        await wait_drained(backend.client, events.LABELS, "audit")
    assert calls == []
    assert letter.payload.message_id == message_id and letter.payload.error.startswith("invalid event")
    assert letter.payload.attempts == 1
    if case.startswith("json-format"):  # the letter keeps the bytes as written, not the broker's view
        assert letter.payload.original == UNREADABLE_ENTRIES[case][b"__data__"].decode()


async def test_entries_of_two_streams_with_the_same_id_are_each_handled(backend: Backend) -> None:
    # Entry ids are per stream: two streams written in the same millisecond give the same id. One entry
    # in flight must not make the bus skip the other as if it were its own redelivery.
    both_started = asyncio.Event()
    started: list[str] = []

    async def hold(event: Envelope[Any]) -> None:
        started.append(event.type)
        if len(started) == 2:
            both_started.set()
        await asyncio.wait_for(both_started.wait(), timeout=10)

    bus = backend.bus("same-ids", bus_reclaim_idle_ms=60_000)
    bus.consume(events.LABELS, hold)
    bus.consume(events.INGEST_REQUESTED, hold)
    request = new_event(events.INGEST_REQUESTED, IngestRequested(dataset="demo", uri="/nowhere.csv"))
    async with running(bus):
        await backend.client.xadd(events.LABELS, {"__data__": labels(1)[0].model_dump_json()}, id="7-0")
        await backend.client.xadd(events.INGEST_REQUESTED, {"__data__": request.model_dump_json()}, id="7-0")
        await until(lambda: both_started.is_set(), "both entries in their handlers at once")
        await wait_drained(backend.client, events.LABELS, "same-ids")
        await wait_drained(backend.client, events.INGEST_REQUESTED, "same-ids")
    assert sorted(started) == [events.INGEST_REQUESTED, events.LABELS]


async def test_a_flood_of_malformed_entries_is_read_ahead_and_good_events_in_it_keep_their_traces(
    backend: Backend,
) -> None:
    """One read and one transaction per malformed entry would let a flood hold good events back for
    minutes: after a malformed entry the consumer reads ahead. Each malformed entry still gets its own
    letter (attempt 1, once), and each good one among them is handled once, in its producer's trace."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    producer = backend.bus("producer", tracer_provider=provider)
    consumer = backend.bus("audit", tracer_provider=provider, bus_reclaim_idle_ms=60_000, bus_read_ahead=50)
    handled: list[tuple[str, int]] = []

    async def handler(event: Envelope[LabelObserved]) -> None:
        handled.append((event.payload.request_id, trace.get_current_span().get_span_context().trace_id))

    consumer.consume(events.LABELS, handler)
    malformed = itertools.cycle(
        [{b"__data__": raw.encode()} for raw, _ in INVALID_ENTRIES.values()]
        + list(UNREADABLE_ENTRIES.values())
    )
    bad_ids: list[str] = []
    upload_traces: dict[str, int] = {}
    async with running(producer):
        for i in range(400):
            if i % 40 == 39:  # a good event among them, published in a trace of its own
                with provider.get_tracer("test").start_as_current_span("upload") as upload:
                    await producer.emit(events.LABELS, label(f"good-{i}"))
                upload_traces[f"good-{i}"] = upload.get_span_context().trace_id
            else:
                bad_ids.append((await backend.client.xadd(events.LABELS, next(malformed))).decode())
        reads_before = await _reads(backend)
        async with running(consumer):
            letters = await dead_letters(backend.client, at_least=len(bad_ids))
            await wait_drained(backend.client, events.LABELS, "audit")
        reads = await _reads(backend) - reads_before

    assert sorted(letter.payload.message_id for letter in letters) == sorted(bad_ids)
    assert {letter.payload.attempts for letter in letters} == {1}
    assert handled == [(request_id, trace_id) for request_id, trace_id in upload_traces.items()]
    if backend.real:  # about one read per 50 entries, not one per entry
        assert reads < 40, reads


async def test_a_backlog_of_fast_events_is_read_ahead_each_handled_once_in_order_and_in_its_trace(
    backend: Backend,
) -> None:
    """Behind a fast handler the consumer reads many entries at once, not one per read: a backlog drains
    without a read and FastStream's per-message path per event. Each event is still handled once, in order,
    in its producer's trace, marked done and acknowledged; a repeat of one (an at-least-once producer)
    read in the same batch as its first copy is skipped, not handled twice."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    producer = backend.bus("producer", tracer_provider=provider)
    consumer = backend.bus("audit", tracer_provider=provider)
    handled: list[tuple[str, int]] = []

    async def handler(event: Envelope[LabelObserved]) -> None:
        handled.append((event.payload.request_id, trace.get_current_span().get_span_context().trace_id))

    consumer.consume(events.LABELS, handler)
    traces: dict[str, int] = {}
    markers: list[str] = []
    async with running(producer):
        for i in range(300):
            with provider.get_tracer("test").start_as_current_span("upload") as upload:
                event = await producer.emit(events.LABELS, label(f"r{i}"))
            traces[f"r{i}"] = upload.get_span_context().trace_id
            markers.append(f"mesh:done:audit:{event.event_id}")
            if i % 50 == 7:
                await producer.publish(event)  # the same event again, right behind it
        reads_before = await _reads(backend)
        async with running(consumer):
            await wait_drained(backend.client, events.LABELS, "audit")
        reads = await _reads(backend) - reads_before

    assert handled == list(traces.items())
    assert await backend.client.exists(*markers) == len(markers)
    if backend.real:  # a few reads, not one per entry
        assert reads < 60, reads


async def test_slow_handlers_are_read_one_entry_at_a_time_so_replicas_share_the_work(
    backend: Backend,
) -> None:
    """Reading ahead behind a handler slower than ``bus_read_ahead_wait_ms`` would leave one replica
    holding work the other could do: each reads one entry at a time, and both take part."""
    buses = [backend.bus("audit", consumer_name=f"audit-{i}", bus_read_ahead_wait_ms=50) for i in range(2)]
    took: dict[str, str] = {}

    def slow(name: str) -> Callable[[Any], Awaitable[None]]:
        async def handler(event: Envelope[LabelObserved]) -> None:
            took[event.payload.request_id] = name
            await asyncio.sleep(0.2)

        return handler

    for i, bus in enumerate(buses):
        bus.consume(events.LABELS, slow(f"audit-{i}"))
    async with running(buses[0]):
        for envelope in labels(8):
            await buses[0].publish(envelope)
    async with running(*buses):
        await wait_drained(backend.client, events.LABELS, "audit")
    assert len(took) == 8
    assert set(took.values()) == {"audit-0", "audit-1"}, took


async def _reads(backend: Backend) -> int:
    if not backend.real:
        return 0
    stats = await backend.client.info("commandstats")
    return int(stats.get("cmdstat_xreadgroup", {}).get("calls", 0))
