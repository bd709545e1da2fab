"""The mesh's bus: a FastStream Redis broker wired to the delivery rules every service shares.

What FastStream 0.7 gives a stream consumer group, and what this package adds on top:

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
* Idle consumers block in XREADGROUP for ``bus_block_ms`` (10 s) instead of FastStream's 100 ms poll;
  the bus's clients wait that long plus ``REPLY_MARGIN_S`` for a reply (redis-py's default is 5 s).
* Handlers are made idempotent per group by ``event_id`` (a done-marker with a TTL), and events
  emitted while handling one get ids derived from it, so a redelivered event re-emits the same ids.
* Streams are not capped as they are written (``XADD MAXLEN`` deletes what a lagging group has not read):
  a periodic pass trims them behind their slowest group, and removes dead consumers and stale errors
  (``shared.bus.housekeeping``).

Here: the wiring (which subscribers read what) and the lifecycle. What happens to each entry is in
``shared.bus.delivery``, publishing in ``shared.bus.publish``, how Redis is reached in
``shared.bus.connection``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from faststream import AckPolicy
from faststream.redis import StreamSub
from faststream.redis.annotations import RedisBatchStreamMessage, RedisStreamMessage
from faststream.redis.opentelemetry import RedisTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from redis.exceptions import ResponseError

from shared.bus.connection import RedisConnection
from shared.bus.delivery import (
    BatchHandler,
    Consumer,
    Deliveries,
    Handler,
    as_text,
    deliver_broadcast,
    in_faststream_format,
    plain_entries,
)
from shared.bus.housekeeping import Housekeeping
from shared.bus.metrics import CONSUMER_LAG, CONSUMER_PENDING, declare_consumer
from shared.bus.publish import Publisher
from shared.events import Envelope, P, Stream
from shared.runtime.logging import get_logger
from shared.runtime.retry import retry
from shared.runtime.settings import MeshSettings
from shared.runtime.stopping import finished_within

log = get_logger("mesh.bus")

REPLY_MARGIN_S = 5.0  # how much longer than a blocking read a client waits for Redis's reply


class MeshBus:
    def __init__(
        self,
        settings: MeshSettings,
        service: str,
        *,
        tracer_provider: TracerProvider | None = None,
        consumer_name: str | None = None,
        connection: RedisConnection | None = None,
    ) -> None:
        """``connection``: how every client of the bus reaches Redis (default: the settings' URL)."""
        self.settings = settings
        self.service = service
        self.consumer_name = consumer_name or f"{service}-{socket.gethostname()}-{os.getpid()}"
        self.connection = connection or RedisConnection(
            settings.effective_redis_url, socket_timeout_s=settings.bus_block_ms / 1000 + REPLY_MARGIN_S
        )
        middlewares = [RedisTelemetryMiddleware(tracer_provider=tracer_provider)] if tracer_provider else []
        self.broker = self.connection.broker(
            middlewares=middlewares,
            graceful_timeout=settings.bus_graceful_timeout_s,
            # FastStream's per-message "Received/Processed" lines at DEBUG; through the root JSON handler.
            logger=logging.getLogger("mesh.faststream"),
            log_level=logging.DEBUG,
        )
        self._redis: aioredis.Redis | None = None
        self.publisher = Publisher(self.broker, lambda: self.redis)
        tracer = tracer_provider.get_tracer("mesh.bus") if tracer_provider else None
        self.deliveries = Deliveries(settings, self.consumer_name, lambda: self.redis, self.publisher, tracer)
        self.housekeeping = Housekeeping(
            settings, self.consumer_name, lambda: self.redis, self._tended_streams
        )
        self._consumers: list[Consumer] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._housekeeper: asyncio.Task[None] | None = None
        self.started = False

    @property
    def redis(self) -> aioredis.Redis:
        """The bus's own redis-py client (beside FastStream's), opened on first use."""
        if self._redis is None:
            self._redis = self.connection.client()
        return self._redis

    # ---- wiring -------------------------------------------------------------------------------

    def consume(self, stream: Stream[P], handler: Handler[P], *, group: str | None = None) -> None:
        """Have ``handler`` receive every event on ``stream``, once per ``group`` (default: the service)."""
        consumer = Consumer(stream, group or self.service, handler)
        # One entry per read, so that replicas share slow work; a malformed entry makes the delivery
        # read ahead while more follow it (Deliveries._read_ahead).
        self._subscribe(consumer, self._read_sub(consumer, max_records=1), self._delivery(consumer))
        self._subscribe(consumer, self._reclaim_sub(consumer), self._delivery(consumer, reclaimed=True))
        self._consumers.append(consumer)
        declare_consumer(consumer.stream, consumer.group)

    def consume_batch(
        self, stream: Stream[P], handler: BatchHandler[P], *, group: str | None = None, max_records: int = 500
    ) -> None:
        """High-volume streams (predictions, labels): up to ``max_records`` entries per read, handled and
        acknowledged together, one round trip each instead of one per entry.

        An entry failing its contract is dead-lettered alone; if the handler fails, the batch stays
        pending and the reclaim sweep retries its entries one by one (so one poison entry cannot hold
        the others back). Entries carry no done-markers: handlers of such streams tolerate a rare repeat.
        """
        consumer = Consumer(stream, group or self.service, lambda envelope: handler([envelope]))

        async def deliver_batch(message: RedisBatchStreamMessage) -> None:
            await self.deliveries.deliver_batch(consumer, handler, message)

        deliver_batch.__name__ = f"{consumer.group}_{stream}_read_batch"
        read = self._read_sub(consumer, max_records=max_records, batch=True)
        self._subscribe(consumer, read, deliver_batch)
        self._subscribe(consumer, self._reclaim_sub(consumer), self._delivery(consumer, reclaimed=True))
        self._consumers.append(consumer)
        declare_consumer(consumer.stream, consumer.group)

    def listen(self, stream: Stream[P], handler: Handler[P]) -> None:
        """Have *every* process running this receive each new event on ``stream`` (no consumer group).

        For broadcasts such as promotions, which every serving worker must see. Nothing is acknowledged
        and nothing is replayed: a listener starts at the stream's end, so it must also read the current
        state itself at start (serving loads the ``champion`` alias).
        """
        sub = StreamSub(stream, polling_interval=self.settings.bus_block_ms, last_id="$")

        async def deliver(message: RedisStreamMessage) -> None:
            await deliver_broadcast(stream, handler, message.body)

        deliver.__name__ = f"{self.service}_{stream}_listen"
        self.broker.subscriber(stream=sub, decoder=_undecoded)(deliver)

    def _read_sub(self, consumer: Consumer, *, max_records: int, batch: bool = False) -> StreamSub:
        """New entries for the group (``>``), blocking up to ``bus_block_ms`` when there are none."""
        return StreamSub(
            consumer.stream,
            group=consumer.group,
            consumer=self.consumer_name,
            polling_interval=self.settings.bus_block_ms,
            batch=batch,
            max_records=max_records,
        )

    def _reclaim_sub(self, consumer: Consumer) -> StreamSub:
        """The sweep: one entry at a time pending longer than ``bus_reclaim_idle_ms`` (XAUTOCLAIM)."""
        return StreamSub(
            consumer.stream,
            group=consumer.group,
            consumer=self.consumer_name,
            polling_interval=self.settings.bus_reclaim_interval_ms,
            max_records=1,
            min_idle_time=self.settings.bus_reclaim_idle_ms,
        )

    def _subscribe(self, consumer: Consumer, sub: StreamSub, deliver: Callable[..., Awaitable[None]]) -> None:
        subscriber = self.broker.subscriber(
            stream=sub, ack_policy=AckPolicy.MANUAL, parser=_readable, decoder=_undecoded
        )
        subscriber(deliver)
        consumer.subscribers.append(subscriber)

    def _delivery(self, consumer: Consumer, *, reclaimed: bool = False) -> Callable[..., Awaitable[None]]:
        async def deliver(message: RedisStreamMessage) -> None:
            await self.deliveries.deliver(consumer, message, reclaimed=reclaimed)

        deliver.__name__ = f"{consumer.group}_{consumer.stream}_{'reclaim' if reclaimed else 'read'}"
        return deliver

    # ---- lifecycle ----------------------------------------------------------------------------

    async def wait_for_redis(self) -> None:
        """Bounded retries with backoff until Redis answers PING (never a fixed sleep)."""

        def waiting(error: BaseException, _delay: float) -> None:
            log.info("waiting for redis", url=self.connection.url, error=str(error))

        await retry(
            self.redis.ping,
            retry_on=(OSError, aioredis.ConnectionError, aioredis.TimeoutError),
            timeout=self.settings.startup_timeout_s,
            what=f"Redis at {self.connection.url}",
            on_retry=waiting,
        )

    async def start(self) -> None:
        await self.wait_for_redis()
        for consumer in self._consumers:
            await self.ensure_group(consumer.stream, consumer.group)
        await self.broker.start()
        if self._consumers:
            self._supervisor = asyncio.create_task(self._supervise(), name=f"{self.service}-bus-supervisor")
        self._housekeeper = asyncio.create_task(self._keep_house(), name=f"{self.service}-bus-housekeeping")
        self.started = True
        self.deliveries.stopping = False
        log.info(
            "bus started",
            consumer=self.consumer_name,
            streams=[c.stream for c in self._consumers],
        )

    async def stop(self) -> None:
        self.started = False
        self.deliveries.stopping = True
        in_flight = self.deliveries.in_flight
        if in_flight:  # a slow stop waits for these, up to bus_graceful_timeout_s
            log.info("bus stopping with events in flight", entries=sorted(in_flight))
        # Bounded: a stop that hangs (a cancel lost in a Redis call, see shared.runtime.stopping) must not
        # hold a service's shutdown forever; what it abandons stays pending, for the group to reclaim.
        if not await finished_within(self._stop_consuming(), self.stop_limit_s):
            log.error("bus stop timed out", after_s=self.stop_limit_s, entries=sorted(in_flight))
        if self._redis is not None:
            await finished_within(self._redis.aclose(), 5)
            self._redis = None

    @property
    def stop_limit_s(self) -> float:
        """How long :meth:`stop` waits for handlers and subscribers before it abandons them."""
        return self.settings.bus_graceful_timeout_s + 10

    async def _stop_consuming(self) -> None:
        background = [task for task in (self._supervisor, self._housekeeper) if task is not None]
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        self._supervisor = self._housekeeper = None
        await self.broker.stop()

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
                group = as_text(info["name"])
                if any(c.stream == stream and c.group == group for c in self._consumers):
                    CONSUMER_LAG.labels(stream, group).set(info.get("lag") or 0)
                    CONSUMER_PENDING.labels(stream, group).set(info.get("pending") or 0)

    async def _supervise(self) -> None:
        """Revive subscribers FastStream stopped for good (NOGROUP after data loss), checked per interval."""
        while True:
            await asyncio.sleep(self.settings.bus_supervise_interval_s)
            if not self.started:
                # Stopping, and the cancel was lost in a Redis call (Python 3.11, see Deliveries._lease):
                # without this, stop() would wait for the supervisor until its time limit.
                return
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

    def _tended_streams(self) -> set[str]:
        """The streams this process keeps trimmed and clean: those it consumes and those it wrote to."""
        return {c.stream for c in self._consumers} | self.publisher.streams

    async def _keep_house(self) -> None:
        """One housekeeping pass per ``bus_retention_interval_s`` (see shared.bus.housekeeping)."""
        while True:
            await asyncio.sleep(self.settings.bus_retention_interval_s)
            if not self.started:
                return  # stopping, the cancel lost in a Redis call (as in _supervise)
            try:
                await self.housekeeping.sweep()
            except (OSError, aioredis.RedisError) as exc:  # Redis down: the next pass tries again
                log.warning("housekeeping pass failed", error=str(exc))
            except Exception:  # never let one bad pass end retention for good: streams would grow unbounded
                log.exception("housekeeping pass failed")

    # ---- publishing (see shared.bus.publish) ----------------------------------------------------

    async def emit(
        self,
        stream: Stream[P],
        payload: P,
        *,
        cause: Envelope[Any] | None = None,
        dedupe_key: str | None = None,
    ) -> Envelope[P]:
        """Publish ``payload`` on ``stream`` in a new envelope that continues ``cause``'s chain."""
        return await self.publisher.emit(stream, payload, cause=cause, dedupe_key=dedupe_key)

    async def publish_many(self, envelopes: Sequence[Envelope[Any]]) -> None:
        """Many events in one pipelined round trip (high-volume streams; no trace headers)."""
        await self.publisher.publish_many(envelopes)

    async def publish(self, envelope: Envelope[Any]) -> None:
        await self.publisher.publish(envelope)


async def _readable(message: Mapping[str, Any], original: Callable[..., Awaitable[Any]]) -> Any:
    """FastStream's parse of what a subscriber read. An entry it cannot decode (its legacy JSON format
    with headers that are no object) would fail before any handler, uncounted, and stay pending until a
    sweep; handed on as plain bytes, the mesh's contract check refuses it and it is dead-lettered at once."""
    if isinstance(message["data"], list):
        return await _readable_batch(message, original)
    try:
        return await original(message)
    except Exception:
        return await original({**message, "data": await plain_entries(message["data"])})


async def _readable_batch(message: Mapping[str, Any], original: Callable[..., Awaitable[Any]]) -> Any:
    """A batch, handed on with its entries as read: the batch delivery reads only those, and FastStream's
    parse of each body (JSON decoded, twice for plain entries, the batch re-encoded) was a third of batch
    consumption's time. It parses only the entries in its own format, whose headers link the batch's span
    to their producers' traces (a stand-in if there are none); those whose bytes are no UTF-8 fail its
    re-encoding, and then the stand-in alone."""
    entries = message["data"]
    framed = [entry for entry in entries if in_faststream_format(entry.get(b"__data__"))] or [_STAND_IN]
    try:
        parsed = await original({**message, "data": framed})
    except Exception:
        parsed = await original({**message, "data": [_STAND_IN]})
    parsed.raw_message = message  # the batch's size on its span, and its entries for the delivery
    return parsed


_STAND_IN = {b"__data__": b"null"}  # what FastStream's parse is given for a batch of plain entries


async def _undecoded(message: Any, _original: Callable[..., Awaitable[Any]]) -> Any:
    """The body as read, not decoded: the delivery rules parse it against the stream's contract anyway,
    and FastStream's own JSON decode raised (RecursionError on "[[[[...") before any handler ran."""
    return message.body
