"""What happens to one stream entry a consumer group reads: the delivery rules every service shares.

An entry is parsed against its stream's contract (invalid: dead-lettered at once), skipped if its
done-marker says the group already handled it, dead-lettered if it was delivered more than
``bus_max_attempts`` times, else handed to the handler under a lease. Success writes the done-marker and
acknowledges; a ``PermanentError`` dead-letters; any other error leaves the entry pending (its error noted)
for the reclaim sweep to redeliver after the idle time, until the last attempt dead-letters it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog
from faststream.redis.parser.binary import BinaryMessageFormatV1
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared import events
from shared.bus.metrics import EVENTS_DEADLETTERED, EVENTS_DUPLICATE, EVENTS_FAILED, EVENTS_HANDLED
from shared.bus.publish import Publisher
from shared.events import (
    ContractError,
    DeadLetter,
    Envelope,
    P,
    Stream,
    new_event,
    parse_event,
    valid_event,
)
from shared.runtime.logging import get_logger
from shared.runtime.settings import MeshSettings

log = get_logger("mesh.bus")

TRACE_CONTEXT = TraceContextTextMapPropagator()  # how FastStream carries the trace in an entry's headers

Handler = Callable[[Envelope[P]], Awaitable[None]]
BatchHandler = Callable[[list[Envelope[P]]], Awaitable[None]]


class PermanentError(Exception):
    """The event can never succeed (a missing file, data failing its schema): dead-letter it now."""


@dataclass
class Consumer:
    """One group's subscription to one stream: its handler and the FastStream subscribers reading for it."""

    stream: Stream[Any]
    group: str
    handler: Handler[Any]
    subscribers: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class Refusal:
    """An entry given up on: the dead letter it gets says this."""

    message_id: str
    original: bytes | str
    envelope: Envelope[Any] | None  # when the entry could be read: the letter continues its chain
    error: str
    attempts: int


def entry_body(fields: Mapping[Any, Any]) -> bytes:
    """The event body of a raw stream entry, as written by FastStream or by a plain ``XADD __data__``."""
    return entry_parts(fields)[0]


def entry_parts(fields: Mapping[Any, Any]) -> tuple[bytes, dict[str, Any]]:
    """The body and FastStream headers (trace context among them) of a raw stream entry."""
    data = fields[b"__data__"]
    raw = data if isinstance(data, bytes) else str(data).encode()
    if in_faststream_format(raw):
        body, headers = BinaryMessageFormatV1.parse(raw)
    else:
        body, headers = _json_parts(raw)
    # FastStream's legacy JSON format ({"data": ..., "headers": ...}) with headers that are no object is
    # no FastStream message: the entry as written, for the contract check to refuse.
    return (body, headers) if isinstance(headers, dict) else (raw, {})


def read_entry(raw: bytes | str, stream: Stream[P]) -> Envelope[P]:
    """``parse_event``, with whatever else breaks reading an entry made a ContractError too: an entry that
    raised anything else would be redelivered by every sweep and never dead-lettered."""
    try:
        return parse_event(raw, stream)
    except ContractError:
        raise
    except Exception as exc:
        raise ContractError(f"message: unreadable ({type(exc).__name__}: {exc})") from None


def in_faststream_format(data: Any) -> bool:
    """Whether an entry's ``__data__`` is in FastStream's binary format (headers, trace context among
    them, around the body), rather than plain JSON as ``publish_many`` and ``XADD`` clients write it."""
    return isinstance(data, bytes) and data.startswith(BinaryMessageFormatV1.IDENTITY_HEADER)


def _json_parts(raw: bytes) -> tuple[bytes, Any]:
    """What ``BinaryMessageFormatV1.parse`` gives for bytes not in FastStream's binary format, decoding
    them once instead of twice: the body and headers of FastStream's legacy JSON format
    (``{"data": ..., "headers": ...}``), else the bytes as written and no headers."""
    try:
        parsed = json.loads(raw)
        return parsed["data"].encode(), parsed.get("headers", {})
    except Exception:
        return raw, {}


async def plain_entries(data: Any) -> Any:
    """A stream entry with its ``__data__`` wrapped as a FastStream message of no headers around the
    bytes as written: what FastStream's parser reads whatever those bytes are."""
    if b"__data__" not in data:
        return data
    wrapped = await BinaryMessageFormatV1.encode(
        message=data[b"__data__"], reply_to=None, headers={}, correlation_id=""
    )
    return {**data, b"__data__": wrapped}


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
        original=as_text(original),
        error=error,
        attempts=attempts,
    )
    return new_event(events.DEADLETTER, letter, cause=cause, dedupe_key=f"{group}:{message_id}")


def as_text(raw: bytes | str) -> str:
    """A value as Redis returned it (bytes, or str from a client decoding responses), as text."""
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw


def annotate_span(envelope: Envelope[Any], attempt: int = 1) -> None:
    """Our ids on the consume span FastStream's middleware opened, so a span leads to its event."""
    trace.get_current_span().set_attributes(
        {
            "mesh.event_id": envelope.event_id,
            "mesh.correlation_id": envelope.correlation_id,
            "mesh.causation_id": envelope.causation_id or "",
            "mesh.attempt": attempt,
        }
    )


async def deliver_broadcast(stream: Stream[P], handler: Handler[P], body: bytes) -> None:
    """A broadcast entry (no group): handled once, or logged; never acknowledged, never retried."""
    try:
        envelope = read_entry(body, stream)
    except ContractError as exc:
        log.warning("ignored invalid broadcast", stream=stream, error=str(exc))
        return
    annotate_span(envelope)
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


class Deliveries:
    """The delivery rules as one bus process applies them to the entries its subscribers read.

    ``redis`` gives the bus's own client (opened on first use), ``publisher`` writes the dead letters,
    ``tracer`` opens the spans of entries read ahead (FastStream's middleware opens the others').
    """

    def __init__(
        self,
        settings: MeshSettings,
        consumer_name: str,
        redis: Callable[[], aioredis.Redis],
        publisher: Publisher,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.settings = settings
        self.consumer_name = consumer_name
        self._client = redis
        self._publisher = publisher
        self._tracer = tracer
        self.stopping = False  # set by the bus on stop: no more entries are read ahead
        # Entries this process is handling now, as "stream/group/entry id": its own reclaim sweep must not
        # hand them out again. Entry ids are per stream (two streams written in the same millisecond give
        # the same id), so an id alone would make one stream's entry skip another's.
        self.in_flight: set[str] = set()

    @property
    def redis(self) -> aioredis.Redis:
        return self._client()

    async def deliver(self, consumer: Consumer, message: Any, *, reclaimed: bool) -> None:
        """One entry read by a group subscriber; ``reclaimed`` if the sweep took it back from the pending."""
        message_id = as_text(message.raw_message["message_ids"][0])
        entry = _entry_key(consumer, message_id)
        if entry in self.in_flight:
            # Our own sweep claimed an entry this process is still handling; the handler will ack it.
            return
        self.in_flight.add(entry)
        started = time.perf_counter()
        try:
            malformed = await self._deliver_once(consumer, message.body, message_id, reclaimed=reclaimed)
        finally:
            self.in_flight.discard(entry)
        if reclaimed:
            return
        if malformed:
            await self._read_ahead(consumer, per_entry_s=None)
        else:
            await self._read_ahead(consumer, per_entry_s=time.perf_counter() - started)

    def _paced_count(self, per_entry_s: float) -> int:
        """How many entries to read at once behind handlers taking ``per_entry_s`` each: as many as they
        handle within ``bus_read_ahead_wait_ms`` (up to ``bus_read_ahead``), so an entry read ahead waits
        no longer than that for its turn, and no replica holds work another could be doing."""
        budget_s = self.settings.bus_read_ahead_wait_ms / 1000
        return min(self.settings.bus_read_ahead, int(budget_s / max(per_entry_s, 1e-6)))

    async def _read_ahead(self, consumer: Consumer, per_entry_s: float | None) -> None:
        """Read more entries at once while the reads bring more, instead of one per FastStream read.

        Two cases. After a malformed entry (``per_entry_s`` None), ``bus_read_ahead`` at a time while reads
        bring more malformed ones: they come in floods (a broken producer, a hostile client), and one read
        and one transaction per entry would let them hold good events back for minutes. After good entries
        handled in ``per_entry_s`` each, as many as ``_paced_count`` allows: a backlog of fast events is
        drained without a read and FastStream's per-message path for each, while slow work (a fit) is still
        read one entry at a time, so that replicas share it.

        The entries read here are in flight and under lease until handled, each valid one in a span
        continuing its own trace. On stop, a paced read is finished (its entries are a short wait's
        worth); a flood's entries not yet handled stay pending for the sweep."""
        stream = consumer.stream
        while not self.stopping:
            flood = per_entry_s is None
            count = self.settings.bus_read_ahead if per_entry_s is None else self._paced_count(per_entry_s)
            if count < 2:  # one at a time: FastStream's own read
                return
            reply: Any = await self.redis.xreadgroup(
                consumer.group, self.consumer_name, {stream: ">"}, count=count
            )
            read: list[tuple[str, Mapping[Any, Any]]] = [
                (as_text(i), fields) for _, entries in reply or [] for i, fields in entries
            ]
            if not read:
                return
            with self._holding(consumer, [message_id for message_id, _ in read]):
                readable, refused = _read_entries(consumer, read)
                if refused:
                    await self._dead_letter(consumer, *refused)
                started = time.perf_counter()
                done = await self._done(consumer, readable)
                for entry, was_done in zip(readable, done, strict=True):
                    if self.stopping and flood:
                        return
                    with self._span(stream, entry.headers):
                        await self._handle(
                            consumer, entry.message_id, entry.raw, entry.envelope, 1, done=was_done, held=True
                        )
                if readable:
                    per_entry_s = (time.perf_counter() - started) / len(readable)
            if refused:
                per_entry_s = None

    async def _done(self, consumer: Consumer, entries: Sequence[Readable]) -> list[bool | None]:
        """Whether each entry's event is done (its marker set), read for all in one round trip; None for an
        event repeated within ``entries``, which ``_handle`` checks when its turn comes (by then the
        first may be done)."""
        seen: set[str] = set()
        repeats = []
        pipe = self.redis.pipeline(transaction=False)
        for entry in entries:
            event_id = entry.envelope.event_id
            repeats.append(event_id in seen)
            seen.add(event_id)
            pipe.exists(done_key(consumer.group, event_id))
        found = await pipe.execute()
        return [None if repeat else bool(exists) for repeat, exists in zip(repeats, found, strict=True)]

    @contextlib.contextmanager
    def _span(self, stream: str, headers: Mapping[str, Any]) -> Iterator[None]:
        """The consume span FastStream's middleware would have opened: a child of the entry's producer."""
        if self._tracer is None:
            yield
            return
        parent = TRACE_CONTEXT.extract(headers)
        with self._tracer.start_as_current_span(
            f"{stream} process",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={"messaging.system": "redis", "messaging.destination.name": stream},
        ):
            yield

    async def deliver_batch(self, consumer: Consumer, handler: BatchHandler[Any], message: Any) -> None:
        """Entries read together (see ``MeshBus.consume_batch``): the valid ones handled in one call and
        acknowledged together, the invalid ones dead-lettered together; a failed batch is left pending.

        The whole batch is in flight and under lease from the read on: were only the valid entries, an
        invalid one waiting its turn behind a slow batch could be reclaimed and dead-lettered twice."""
        ids = [as_text(i) for i in message.raw_message["message_ids"]]
        with self._holding(consumer, ids):
            await self._handle_batch(consumer, handler, ids, message.raw_message["data"])

    @contextlib.contextmanager
    def _holding(self, consumer: Consumer, ids: Sequence[str]) -> Iterator[None]:
        """Entries read together, in flight (no sweep of this process hands them out again) and under
        lease (no other consumer's sweep claims them) while inside."""
        keys = {_entry_key(consumer, message_id) for message_id in ids}
        self.in_flight.update(keys)
        try:
            with self._lease(consumer.stream, consumer.group, ids):
                yield
        finally:
            self.in_flight.difference_update(keys)

    async def _handle_batch(
        self, consumer: Consumer, handler: BatchHandler[Any], ids: list[str], data: list[Any]
    ) -> None:
        readable, refused = _read_entries(consumer, list(zip(ids, data, strict=True)))
        envelopes = [entry.envelope for entry in readable]
        good_ids = [entry.message_id for entry in readable]
        if refused:
            await self._dead_letter(consumer, *refused)
        if not envelopes:
            return
        try:
            await handler(envelopes)
        except Exception:
            EVENTS_FAILED.labels(consumer.stream, consumer.group).inc(len(good_ids))
            log.exception("batch handler failed; entries will be retried one by one", count=len(good_ids))
            return
        await self.redis.xack(consumer.stream, consumer.group, *good_ids)
        EVENTS_HANDLED.labels(consumer.stream, consumer.group).inc(len(good_ids))

    async def _deliver_once(
        self, consumer: Consumer, raw: bytes, message_id: str, *, reclaimed: bool
    ) -> bool:
        """One entry's delivery; True if it was malformed (dead-lettered before any handler ran)."""
        stream, group = consumer.stream, consumer.group
        attempts = await self._delivery_count(stream, group, message_id) if reclaimed else 1

        try:
            envelope: Envelope[Any] = read_entry(raw, stream)
        except ContractError as exc:
            invalid = Refusal(message_id, raw, None, f"invalid event: {exc}", attempts)
            await self._dead_letter(consumer, invalid)
            return True
        await self._handle(consumer, message_id, raw, envelope, attempts)
        return False

    async def _handle(
        self,
        consumer: Consumer,
        message_id: str,
        raw: bytes,
        envelope: Envelope[Any],
        attempts: int,
        *,
        done: bool | None = None,
        held: bool = False,
    ) -> None:
        """A readable entry: skipped if done, given up past the attempts, else handled and acknowledged.
        ``done``: whether its done-marker was found, when the caller read it (else read here); ``held``: the
        caller keeps the entry under lease already (entries read ahead), so no lease of its own is taken."""
        stream, group = consumer.stream, consumer.group
        marker = done_key(group, envelope.event_id)
        if done is None:
            done = bool(await self.redis.exists(marker))
        if done:
            EVENTS_DUPLICATE.labels(stream, group).inc()
            await self.redis.xack(stream, group, message_id)
            if attempts > 1:  # an earlier attempt of this entry may have left its error
                await self.redis.hdel(errors_key(stream, group), message_id)
            return

        if attempts > self.settings.bus_max_attempts:
            last_error = await self.redis.hget(errors_key(stream, group), message_id)
            reason = as_text(last_error) if last_error else "consumer died while handling it"
            given_up = Refusal(message_id, raw, envelope, f"gave up: {reason}", attempts)
            await self._dead_letter(consumer, given_up)
            return

        with_context = {"event_id": envelope.event_id, "correlation_id": envelope.correlation_id}
        annotate_span(envelope, attempt=attempts)
        bound = log.bind(stream=stream, message_id=message_id, attempt=attempts, **with_context)
        with (
            structlog.contextvars.bound_contextvars(**with_context),
            contextlib.nullcontext() if held else self._lease(stream, group, [message_id]),
        ):
            try:
                await consumer.handler(envelope)
            except PermanentError as exc:
                bound.warning("event rejected", error=str(exc))
                await self._dead_letter(consumer, Refusal(message_id, raw, envelope, str(exc), attempts))
                return
            except Exception as exc:
                EVENTS_FAILED.labels(stream, group).inc()
                error = f"{type(exc).__name__}: {exc}"
                bound.exception("handler failed", error=error)
                if attempts >= self.settings.bus_max_attempts:
                    await self._dead_letter(consumer, Refusal(message_id, raw, envelope, error, attempts))
                else:
                    # Left pending on purpose: the reclaim sweep redelivers it after the idle time.
                    await self.redis.hset(errors_key(stream, group), message_id, error)
                return

        # The done-marker and the ack in one round trip, all or nothing: an entry acknowledged without
        # its marker could be handled again if it were ever replayed, a marker without the ack costs a
        # redelivery that the marker then skips.
        finished = self.redis.pipeline(transaction=True)
        finished.set(marker, b"1", ex=self.settings.idempotency_ttl_s)
        finished.xack(stream, group, message_id)
        if attempts > 1:
            finished.hdel(errors_key(stream, group), message_id)
        await finished.execute()
        EVENTS_HANDLED.labels(stream, group).inc()

    async def _delivery_count(self, stream: str, group: str, message_id: str) -> int:
        pending = await self.redis.xpending_range(stream, group, min=message_id, max=message_id, count=1)
        return int(pending[0]["times_delivered"]) if pending else 1

    @contextlib.contextmanager
    def _lease(self, stream: str, group: str, message_ids: Sequence[str]) -> Iterator[None]:
        """While inside, keep claiming the entries (XCLAIM JUSTID: not a delivery) so no sweep takes them.

        Ended by a flag as well as by cancelling the renewal: on Python 3.11 redis-py writes a command
        through ``asyncio.wait_for``, which loses a cancellation arriving as the write completes. A lease
        outliving its handler that way would keep a failed entry fresh forever: never retried, never
        dead-lettered.
        """
        period = self.settings.bus_reclaim_idle_ms / 3000
        ended = False

        async def renew() -> None:
            while True:
                await asyncio.sleep(period)
                if ended:
                    return
                await self.redis.xclaim(
                    stream,
                    group,
                    self.consumer_name,
                    min_idle_time=0,
                    message_ids=list(message_ids),
                    justid=True,
                )

        renewal = asyncio.create_task(renew())
        try:
            yield
        finally:
            ended = True
            renewal.cancel()

    async def _dead_letter(self, consumer: Consumer, *refusals: Refusal) -> None:
        stream, group = consumer.stream, consumer.group
        letters = [
            dead_letter(stream, group, r.message_id, r.original, r.envelope, r.error, r.attempts)
            for r in refusals
        ]
        ids = [r.message_id for r in refusals]
        # The letters, the acks and the cleanup in one transaction (one round trip): never a letter for an
        # entry still pending (it would be dead-lettered twice), never an ack without its letter.
        transaction = self.redis.pipeline(transaction=True)
        # A letter of an entry that could not be read continues no chain and carries no trace: written
        # plainly, without FastStream's publish path (most of a flood's cost per letter).
        pairs = list(zip(refusals, letters, strict=True))
        await self._publisher.stage(transaction, [letter for r, letter in pairs if r.envelope is not None])
        self._publisher.stage_plain(transaction, [letter for r, letter in pairs if r.envelope is None])
        transaction.xack(stream, group, *ids)
        transaction.hdel(errors_key(stream, group), *ids)
        await transaction.execute()
        self._publisher.sent(letters)
        EVENTS_DEADLETTERED.labels(stream, group).inc(len(refusals))
        for refusal in refusals:
            log.warning(
                "dead-lettered",
                stream=stream,
                group=group,
                message_id=refusal.message_id,
                error=refusal.error,
                attempts=refusal.attempts,
            )


@dataclass(frozen=True)
class Readable:
    """An entry meeting its stream's contract, as read."""

    message_id: str
    raw: bytes
    headers: dict[str, Any]
    envelope: Envelope[Any]


def _read_entries(
    consumer: Consumer, read: Sequence[tuple[str, Mapping[Any, Any]]]
) -> tuple[list[Readable], list[Refusal]]:
    """Entries as read (id, fields): those meeting the stream's contract, and refusals of the others."""
    readable: list[Readable] = []
    refused: list[Refusal] = []
    for message_id, fields in read:
        if (envelope := _plain_event(fields, consumer.stream)) is not None:
            readable.append(Readable(message_id, fields[b"__data__"], {}, envelope))
            continue
        try:
            body, headers = entry_parts(fields)
        except KeyError:
            reason = "invalid event: message: the entry has no __data__ field"
            refused.append(Refusal(message_id, repr(fields), None, reason, 1))
            continue
        try:
            envelope = read_entry(body, consumer.stream)
        except ContractError as exc:
            # As written: entry_parts undoes the wrapping of an entry FastStream could not decode.
            refused.append(Refusal(message_id, body, None, f"invalid event: {exc}", 1))
            continue
        readable.append(Readable(message_id, body, headers, envelope))
    return readable, refused


def _plain_event(fields: Mapping[Any, Any], stream: Stream[Any]) -> Envelope[Any] | None:
    """The event of an entry written as plain JSON (``publish_many``: the high-volume streams), read in
    one pass; None for any other entry, which ``entry_parts`` unwraps first. A valid envelope has no
    ``data`` field, so it is never FastStream's legacy format, which the unwrapping would change."""
    data = fields.get(b"__data__")
    if not isinstance(data, bytes) or in_faststream_format(data):
        return None
    return valid_event(data, stream)


def _entry_key(consumer: Consumer, message_id: str) -> str:
    return f"{consumer.stream}/{consumer.group}/{message_id}"


def done_key(group: str, event_id: str) -> str:
    """The marker of an event ``group`` has handled: a repeat of it (a replay, a producer's retry) is
    acknowledged without running the handler again."""
    return f"mesh:done:{group}:{event_id}"


def errors_key(stream: str, group: str) -> str:
    """The hash of a group's pending entries' last errors, for the dead letter of their final attempt."""
    return f"mesh:errors:{stream}:{group}"
