"""The mesh's bus: a FastStream Redis broker plus the delivery rules every service shares.

What FastStream 0.7 gives a stream consumer group, and what this module adds on top:

* A group FastStream creates starts at ``$`` and never sees entries already in the stream.
  We create every group at ``0`` before the broker starts, so a new service drains the backlog.
* On Redis ``nack``/``reject`` send nothing: a failed entry stays pending forever unless something
  reclaims it. Each stream gets two subscribers in the same group and consumer: one reads new
  entries (``>``), one sweeps entries pending longer than ``bus_reclaim_idle_ms`` (XAUTOCLAIM). The
  sweep reads the delivery count from XPENDING; past ``bus_max_attempts`` the entry goes to
  ``deadletter`` with its last error.
* Long handlers renew their claim (XCLAIM JUSTID, which does not count as a delivery) so a live
  consumer's work is not stolen by the sweep of another replica.
* Acknowledge only after the handler *and* its outgoing publishes are done (manual ack policy).
* A ``NOGROUP`` error (Redis lost its data: restart without persistence, FLUSHALL) makes FastStream
  stop the subscriber for good. A supervisor notices, recreates the group and restarts it,
  at most once per ``bus_supervise_interval_s``: no tight loop.
* Idle consumers block in XREADGROUP for ``bus_block_ms`` (1 s) instead of FastStream's 100 ms poll.
* Handlers are made idempotent per group by ``event_id`` (a done-marker with a TTL), and events
  emitted while handling one get ids derived from it, so a redelivered event re-emits the same ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog
from faststream import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.annotations import RedisBatchStreamMessage, RedisStreamMessage
from faststream.redis.opentelemetry import RedisTelemetryMiddleware
from faststream.redis.parser.binary import BinaryMessageFormatV1
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import Counter, Gauge
from redis.exceptions import ResponseError

from shared import events
from shared.events import ContractError, DeadLetter, Envelope, P, Stream, new_event, parse_event
from shared.runtime.logging import get_logger
from shared.runtime.settings import MeshSettings

log = get_logger("mesh.bus")

EVENTS_HANDLED = Counter("mesh_events_handled_total", "Events handled successfully", ["stream", "group"])
EVENTS_FAILED = Counter("mesh_events_failed_total", "Handler attempts that raised", ["stream", "group"])
EVENTS_DEADLETTERED = Counter(
    "mesh_events_deadlettered_total", "Events sent to the dead-letter stream", ["stream", "group"]
)
EVENTS_DUPLICATE = Counter(
    "mesh_events_duplicate_total", "Redelivered events skipped as already handled", ["stream", "group"]
)
EVENTS_PUBLISHED = Counter("mesh_events_published_total", "Events published", ["stream"])
CONSUMER_LAG = Gauge("mesh_consumer_lag_messages", "Entries not yet read by the group", ["stream", "group"])
CONSUMER_PENDING = Gauge(
    "mesh_consumer_pending_messages", "Entries read but not acknowledged by the group", ["stream", "group"]
)

Handler = Callable[[Envelope[P]], Awaitable[None]]
BatchHandler = Callable[[list[Envelope[P]]], Awaitable[None]]


class PermanentError(Exception):
    """The event can never succeed (a missing file, data failing its schema): dead-letter it now."""


@dataclass
class _Consumer:
    stream: Stream[Any]
    group: str
    handler: Handler[Any]
    subscribers: list[Any] = field(default_factory=list)


def entry_body(fields: Mapping[Any, Any]) -> bytes:
    """The event body of a raw stream entry, as written by FastStream or by a plain ``XADD __data__``."""
    data = fields[b"__data__"]
    body, _headers = BinaryMessageFormatV1.parse(data if isinstance(data, bytes) else str(data).encode())
    return body


def dead_letter(
    stream: Stream[Any],
    group: str,
    message_id: str,
    original: bytes | str,
    cause: Envelope[Any] | None,
    error: str,
    attempts: int,
) -> Envelope[Any]:
    """The ``deadletter`` event for one entry: the original bytes as received, where it came from, why.

    It continues the failed event's chain when that could be parsed, and its id derives from the
    group and entry id, so dead-lettering the same entry twice (after a crash) publishes one letter.
    """
    letter = DeadLetter(
        stream=stream,
        message_id=message_id,
        group=group,
        original=_decode(original),
        error=error,
        attempts=attempts,
    )
    return new_event(events.DEADLETTER, letter, cause=cause, dedupe_key=f"{group}:{message_id}")


def _annotate_span(envelope: Envelope[Any], attempt: int = 1) -> None:
    """Our ids on the consume span FastStream's middleware opened, so a span leads to its event."""
    trace.get_current_span().set_attributes(
        {
            "mesh.event_id": envelope.event_id,
            "mesh.correlation_id": envelope.correlation_id,
            "mesh.causation_id": envelope.causation_id or "",
            "mesh.attempt": attempt,
        }
    )


def _decode(raw: bytes | str) -> str:
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw


class MeshBus:
    def __init__(
        self,
        settings: MeshSettings,
        service: str,
        *,
        tracer_provider: TracerProvider | None = None,
        consumer_name: str | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.consumer_name = consumer_name or f"{service}-{socket.gethostname()}-{os.getpid()}"
        middlewares = [RedisTelemetryMiddleware(tracer_provider=tracer_provider)] if tracer_provider else []
        self.broker = RedisBroker(
            settings.effective_redis_url,
            middlewares=middlewares,
            graceful_timeout=settings.bus_graceful_timeout_s,
            # FastStream's per-message "Received/Processed" lines at DEBUG; through the root JSON handler.
            logger=logging.getLogger("mesh.faststream"),
            log_level=logging.DEBUG,
        )
        self._redis: aioredis.Redis | None = None
        self._consumers: list[_Consumer] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._in_flight: set[str] = set()
        self.started = False

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = aioredis.from_url(self.settings.effective_redis_url)
        return self._redis

    # ---- wiring -------------------------------------------------------------------------------

    def consume(self, stream: Stream[P], handler: Handler[P], *, group: str | None = None) -> None:
        """Have ``handler`` receive every event on ``stream``, once per ``group`` (default: the service)."""
        group = group or self.service
        consumer = _Consumer(stream, group, handler)
        s = self.settings
        for reclaimed in (False, True):
            sub = StreamSub(
                stream,
                group=group,
                consumer=self.consumer_name,
                polling_interval=s.bus_reclaim_interval_ms if reclaimed else s.bus_block_ms,
                # One entry per read: entries fetched in a batch would sit pending, unrenewed, behind the
                # one being handled, and the reclaim sweep would hand them out a second time.
                max_records=1,
                min_idle_time=s.bus_reclaim_idle_ms if reclaimed else None,
            )
            subscriber = self.broker.subscriber(stream=sub, ack_policy=AckPolicy.MANUAL)
            subscriber(self._delivery(consumer, reclaimed=reclaimed))
            consumer.subscribers.append(subscriber)
        self._consumers.append(consumer)

    def consume_batch(
        self, stream: Stream[P], handler: BatchHandler[P], *, group: str | None = None, max_records: int = 500
    ) -> None:
        """High-volume streams (predictions, labels): up to ``max_records`` entries per read, handled and
        acknowledged together, one round trip each instead of one per entry.

        An entry failing its contract is dead-lettered alone; if the handler fails, the batch stays
        pending and the reclaim sweep retries its entries one by one (so one poison entry cannot hold
        the others back). Entries carry no done-markers: handlers of such streams tolerate a rare repeat.
        """
        group = group or self.service
        consumer = _Consumer(stream, group, lambda envelope: handler([envelope]))
        read = StreamSub(
            stream,
            group=group,
            consumer=self.consumer_name,
            polling_interval=self.settings.bus_block_ms,
            batch=True,
            max_records=max_records,
        )
        reclaim = StreamSub(
            stream,
            group=group,
            consumer=self.consumer_name,
            polling_interval=self.settings.bus_reclaim_interval_ms,
            max_records=1,
            min_idle_time=self.settings.bus_reclaim_idle_ms,
        )

        async def deliver_batch(message: RedisBatchStreamMessage) -> None:
            await self._deliver_batch(consumer, handler, message)

        deliver_batch.__name__ = f"{group}_{stream}_read_batch"
        for sub, deliver in ((read, deliver_batch), (reclaim, self._delivery(consumer, reclaimed=True))):
            subscriber = self.broker.subscriber(stream=sub, ack_policy=AckPolicy.MANUAL)
            subscriber(deliver)
            consumer.subscribers.append(subscriber)
        self._consumers.append(consumer)

    async def _deliver_batch(self, consumer: _Consumer, handler: BatchHandler[Any], message: Any) -> None:
        ids = [_decode(i) for i in message.raw_message["message_ids"]]
        envelopes: list[Envelope[Any]] = []
        good_ids: list[str] = []
        for message_id, fields in zip(ids, message.raw_message["data"], strict=True):
            try:
                envelopes.append(parse_event(entry_body(fields), consumer.stream))
                good_ids.append(message_id)
            except (ContractError, KeyError) as exc:
                original = fields.get(b"__data__", repr(fields))
                await self._dead_letter(consumer, message_id, original, None, f"invalid event: {exc}", 1)
        if not envelopes:
            return
        self._in_flight.update(good_ids)
        lease = asyncio.create_task(self._renew_lease(consumer.stream, consumer.group, good_ids))
        try:
            await handler(envelopes)
        except Exception:
            EVENTS_FAILED.labels(consumer.stream, consumer.group).inc(len(good_ids))
            log.exception("batch handler failed; entries will be retried one by one", count=len(good_ids))
            return
        finally:
            lease.cancel()
            self._in_flight.difference_update(good_ids)
        await self.redis.xack(consumer.stream, consumer.group, *good_ids)
        EVENTS_HANDLED.labels(consumer.stream, consumer.group).inc(len(good_ids))

    def listen(self, stream: Stream[P], handler: Handler[P]) -> None:
        """Have *every* process running this receive each new event on ``stream`` (no consumer group).

        For broadcasts such as promotions, which every serving worker must see. Nothing is acknowledged
        and nothing is replayed: a listener starts at the stream's end, so it must also read the current
        state itself at start (serving loads the ``champion`` alias).
        """
        sub = StreamSub(stream, polling_interval=self.settings.bus_block_ms, last_id="$")

        async def deliver(message: RedisStreamMessage) -> None:
            try:
                envelope = parse_event(message.body, stream)
            except ContractError as exc:
                log.warning("ignored invalid broadcast", stream=stream, error=str(exc))
                return
            _annotate_span(envelope)
            with structlog.contextvars.bound_contextvars(
                event_id=envelope.event_id, correlation_id=envelope.correlation_id
            ):
                try:
                    await handler(envelope)
                except Exception:
                    EVENTS_FAILED.labels(stream, "broadcast").inc()
                    log.exception("broadcast handler failed", stream=stream)
                    return
            EVENTS_HANDLED.labels(stream, "broadcast").inc()

        deliver.__name__ = f"{self.service}_{stream}_listen"
        self.broker.subscriber(stream=sub)(deliver)

    def _delivery(self, consumer: _Consumer, *, reclaimed: bool) -> Callable[..., Awaitable[None]]:
        async def deliver(message: RedisStreamMessage) -> None:
            await self._deliver(consumer, message, reclaimed=reclaimed)

        deliver.__name__ = f"{consumer.group}_{consumer.stream}_{'reclaim' if reclaimed else 'read'}"
        return deliver

    # ---- lifecycle ----------------------------------------------------------------------------

    async def wait_for_redis(self) -> None:
        """Bounded retries with backoff until Redis answers PING (never a fixed sleep)."""
        deadline = time.monotonic() + self.settings.startup_timeout_s
        delay = 0.1
        while True:
            try:
                await self.redis.ping()
                return
            except (OSError, aioredis.ConnectionError, aioredis.TimeoutError) as exc:
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"Redis at {self.settings.effective_redis_url} not reachable after "
                        f"{self.settings.startup_timeout_s:.0f}s: {exc}"
                    ) from exc
                log.info("waiting for redis", url=self.settings.effective_redis_url, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def start(self) -> None:
        await self.wait_for_redis()
        for consumer in self._consumers:
            await self.ensure_group(consumer.stream, consumer.group)
        await self.broker.start()
        if self._consumers:
            self._supervisor = asyncio.create_task(self._supervise(), name=f"{self.service}-bus-supervisor")
        self.started = True
        log.info(
            "bus started",
            consumer=self.consumer_name,
            streams=[c.stream for c in self._consumers],
        )

    async def stop(self) -> None:
        self.started = False
        if self._in_flight:  # a slow stop waits for these, up to bus_graceful_timeout_s
            log.info("bus stopping with events in flight", message_ids=sorted(self._in_flight))
        # Bounded: a stop that hangs (seen once on a saturated CI machine, cause not found) must not hold
        # a service's shutdown forever; what it abandons stays pending, for the group to reclaim.
        limit = self.settings.bus_graceful_timeout_s + 10
        try:
            async with asyncio.timeout(limit):
                if self._supervisor is not None:
                    self._supervisor.cancel()
                    await asyncio.gather(self._supervisor, return_exceptions=True)
                    self._supervisor = None
                await self.broker.stop()
        except TimeoutError:
            log.error("bus stop timed out", after_s=limit, message_ids=sorted(self._in_flight))
        if self._redis is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._redis.aclose()
            self._redis = None

    async def ready(self) -> bool:
        if not self.started:
            return False
        try:
            return bool(await self.redis.ping())
        except (OSError, aioredis.RedisError):
            return False

    async def ensure_group(self, stream: str, group: str) -> bool:
        """Create ``group`` at the start of ``stream`` (so it sees the backlog); True if it was created."""
        try:
            await self.redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        return True

    async def _measure(self) -> None:
        """Lag and pending counts of this service's groups, for the metrics (one XINFO per stream)."""
        for stream in {c.stream for c in self._consumers}:
            try:
                groups = await self.redis.xinfo_groups(stream)
            except ResponseError:
                continue  # the stream is gone (data loss): the supervisor recreates it
            for info in groups:
                group = _decode(info["name"])
                if any(c.stream == stream and c.group == group for c in self._consumers):
                    CONSUMER_LAG.labels(stream, group).set(info.get("lag") or 0)
                    CONSUMER_PENDING.labels(stream, group).set(info.get("pending") or 0)

    async def _supervise(self) -> None:
        """Revive subscribers FastStream stopped for good (NOGROUP after data loss), checked per interval."""
        while True:
            await asyncio.sleep(self.settings.bus_supervise_interval_s)
            try:
                await self._measure()
            except (OSError, aioredis.RedisError) as exc:
                log.warning("could not read group metrics", error=str(exc))
            for consumer in self._consumers:
                for subscriber in consumer.subscribers:
                    tasks = getattr(subscriber, "tasks", [])
                    if subscriber.running and tasks and not all(t.done() for t in tasks):
                        continue
                    try:
                        created = await self.ensure_group(consumer.stream, consumer.group)
                        await subscriber.stop()
                        await subscriber.start()
                        log.warning(
                            "subscriber restarted",
                            stream=consumer.stream,
                            group=consumer.group,
                            group_recreated=created,
                        )
                    except Exception as exc:  # Redis may still be down: try again next interval
                        log.warning("subscriber restart failed", stream=consumer.stream, error=str(exc))

    # ---- delivery -----------------------------------------------------------------------------

    async def _deliver(self, consumer: _Consumer, message: Any, *, reclaimed: bool) -> None:
        message_id = _decode(message.raw_message["message_ids"][0])
        if message_id in self._in_flight:
            # Our own sweep claimed an entry this process is still handling; the handler will ack it.
            return
        self._in_flight.add(message_id)
        try:
            await self._deliver_once(consumer, message, message_id, reclaimed=reclaimed)
        finally:
            self._in_flight.discard(message_id)

    async def _deliver_once(
        self, consumer: _Consumer, message: Any, message_id: str, *, reclaimed: bool
    ) -> None:
        stream, group = consumer.stream, consumer.group
        raw = message.body
        attempts = await self._delivery_count(stream, group, message_id) if reclaimed else 1

        try:
            envelope: Envelope[Any] = parse_event(raw, stream)
        except ContractError as exc:
            await self._dead_letter(consumer, message_id, raw, None, f"invalid event: {exc}", attempts)
            return

        done_key = f"mesh:done:{group}:{envelope.event_id}"
        if await self.redis.exists(done_key):
            EVENTS_DUPLICATE.labels(stream, group).inc()
            await message.ack()
            return

        if attempts > self.settings.bus_max_attempts:
            last_error = await self.redis.hget(self._errors_key(stream, group), message_id)
            reason = _decode(last_error) if last_error else "consumer died while handling it"
            await self._dead_letter(consumer, message_id, raw, envelope, f"gave up: {reason}", attempts)
            return

        with_context = {"event_id": envelope.event_id, "correlation_id": envelope.correlation_id}
        _annotate_span(envelope, attempt=attempts)
        bound = log.bind(stream=stream, message_id=message_id, attempt=attempts, **with_context)
        with structlog.contextvars.bound_contextvars(**with_context):
            lease = asyncio.create_task(self._renew_lease(stream, group, [message_id]))
            try:
                await consumer.handler(envelope)
            except PermanentError as exc:
                bound.warning("event rejected", error=str(exc))
                await self._dead_letter(consumer, message_id, raw, envelope, str(exc), attempts)
                return
            except Exception as exc:
                EVENTS_FAILED.labels(stream, group).inc()
                error = f"{type(exc).__name__}: {exc}"
                bound.exception("handler failed", error=error)
                if attempts >= self.settings.bus_max_attempts:
                    await self._dead_letter(consumer, message_id, raw, envelope, error, attempts)
                else:
                    # Left pending on purpose: the reclaim sweep redelivers it after the idle time.
                    await self.redis.hset(self._errors_key(stream, group), message_id, error)
                return
            finally:
                lease.cancel()

        await self.redis.set(done_key, b"1", ex=self.settings.idempotency_ttl_s)
        await message.ack()
        if attempts > 1:
            await self.redis.hdel(self._errors_key(stream, group), message_id)
        EVENTS_HANDLED.labels(stream, group).inc()

    @staticmethod
    def _errors_key(stream: str, group: str) -> str:
        return f"mesh:errors:{stream}:{group}"

    async def _delivery_count(self, stream: str, group: str, message_id: str) -> int:
        pending = await self.redis.xpending_range(stream, group, min=message_id, max=message_id, count=1)
        return int(pending[0]["times_delivered"]) if pending else 1

    async def _renew_lease(self, stream: str, group: str, message_ids: Sequence[str]) -> None:
        period = self.settings.bus_reclaim_idle_ms / 3000
        while True:
            await asyncio.sleep(period)
            await self.redis.xclaim(
                stream, group, self.consumer_name, min_idle_time=0, message_ids=list(message_ids), justid=True
            )

    async def _dead_letter(
        self,
        consumer: _Consumer,
        message_id: str,
        original: bytes | str,
        envelope: Envelope[Any] | None,
        error: str,
        attempts: int,
    ) -> None:
        await self.publish(
            dead_letter(consumer.stream, consumer.group, message_id, original, envelope, error, attempts)
        )
        await self.redis.xack(consumer.stream, consumer.group, message_id)
        await self.redis.hdel(self._errors_key(consumer.stream, consumer.group), message_id)
        EVENTS_DEADLETTERED.labels(consumer.stream, consumer.group).inc()
        log.warning(
            "dead-lettered",
            stream=consumer.stream,
            group=consumer.group,
            message_id=message_id,
            error=error,
            attempts=attempts,
        )

    # ---- publishing ---------------------------------------------------------------------------

    async def emit(
        self,
        stream: Stream[P],
        payload: P,
        *,
        cause: Envelope[Any] | None = None,
        dedupe_key: str | None = None,
    ) -> Envelope[P]:
        """Publish ``payload`` on ``stream`` in a new envelope that continues ``cause``'s chain."""
        envelope = new_event(stream, payload, cause=cause, dedupe_key=dedupe_key)
        await self.publish(envelope)
        return envelope

    async def publish_many(self, envelopes: Sequence[Envelope[Any]]) -> None:
        """Many events in one pipelined round trip (high-volume streams: predictions, labels).

        Written as plain JSON entries, which every consumer reads like FastStream's own; what is lost is
        per-message trace headers, which sampled records do not need.
        """
        pipe = self.redis.pipeline(transaction=False)
        for envelope in envelopes:
            pipe.xadd(
                envelope.type,
                {"__data__": envelope.model_dump_json()},
                maxlen=self.settings.stream_maxlen,
                approximate=True,
            )
        await pipe.execute()
        for envelope in envelopes:
            EVENTS_PUBLISHED.labels(envelope.type).inc()

    async def publish(self, envelope: Envelope[Any]) -> None:
        await self.broker.publish(
            envelope.model_dump_json().encode(),
            stream=envelope.type,
            maxlen=self.settings.stream_maxlen,
            correlation_id=envelope.correlation_id,
            headers={"event_id": envelope.event_id, "content-type": "application/json"},
        )
        EVENTS_PUBLISHED.labels(envelope.type).inc()
