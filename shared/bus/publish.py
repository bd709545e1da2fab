"""Writing events onto streams: one at a time through FastStream, or many in one pipelined round trip.

Nothing is trimmed here: ``XADD MAXLEN`` would delete entries a lagging group has not read or acknowledged.
Streams are kept to their cap by ``shared.bus.housekeeping``, which trims only behind every group; the
streams written here are what it tends (``streams``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from faststream.redis import RedisBroker
from redis.asyncio.client import Pipeline

from shared.bus.metrics import EVENTS_PUBLISHED
from shared.events import Envelope, P, Stream, new_event


class Publisher:
    """Publishes a bus's events: ``broker`` is its FastStream broker, ``redis`` gives its own client."""

    def __init__(self, broker: RedisBroker, redis: Callable[[], aioredis.Redis]) -> None:
        self.broker = broker
        self._client = redis
        self.streams: set[str] = set()  # every stream this process has published to

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
        pipe = self._client().pipeline(transaction=False)
        self.stage_plain(pipe, envelopes)
        await pipe.execute()
        self.sent(envelopes)

    def stage_plain(self, pipeline: Pipeline, envelopes: Sequence[Envelope[Any]]) -> None:
        """Queue events on ``pipeline`` as plain JSON entries, without trace headers (see publish_many)."""
        for envelope in envelopes:
            pipeline.xadd(envelope.type, {"__data__": envelope.model_dump_json()})

    async def publish(self, envelope: Envelope[Any]) -> None:
        """One event, through FastStream so the current trace travels in its headers."""
        await self._through_broker(envelope, None)
        self.sent([envelope])

    async def stage(self, transaction: Pipeline, envelopes: Sequence[Envelope[Any]]) -> None:
        """Queue events on ``transaction`` (a MULTI the caller executes), trace headers included: they are
        written if and only if the caller's other writes are. Once it has executed, count them (``sent``)."""
        for envelope in envelopes:
            await self._through_broker(envelope, transaction)

    def sent(self, envelopes: Sequence[Envelope[Any]]) -> None:
        for envelope in envelopes:
            self.streams.add(envelope.type)
            EVENTS_PUBLISHED.labels(envelope.type).inc()

    async def _through_broker(self, envelope: Envelope[Any], pipeline: Pipeline | None) -> None:
        await self.broker.publish(
            envelope.model_dump_json().encode(),
            stream=envelope.type,
            correlation_id=envelope.correlation_id,
            headers={"event_id": envelope.event_id, "content-type": "application/json"},
            pipeline=pipeline,
        )
