"""Reading what is on a stream, as a consumer would, and waiting until enough is there."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from shared.bus import entry_body
from shared.events import Stream, parse_event
from shared.runtime.retry import wait_for


async def stream_events(client: aioredis.Redis, stream: Stream[Any]) -> list[Any]:
    """Every event currently on ``stream``, decoded through the contracts (as a consumer would)."""
    return [parse_event(entry_body(fields), stream) for _, fields in await client.xrange(stream)]


async def count(redis_client: aioredis.Redis, stream: Stream[Any], at_least: int) -> list[Any]:
    """All events on ``stream`` once there are at least ``at_least`` of them."""

    async def enough() -> list[Any] | None:
        envelopes = await stream_events(redis_client, stream)
        return envelopes if len(envelopes) >= at_least else None

    result: list[Any] = await wait_for(enough, timeout=120, what=f"{at_least} event(s) on {stream}")
    return result
