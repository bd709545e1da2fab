"""How the bus reaches Redis: the one place every Redis client of the bus is built from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from faststream.redis import RedisBroker


@dataclass(frozen=True)
class RedisConnection:
    """Where Redis is, and which redis-py connection class speaks to it.

    The bus has two clients, FastStream's broker and its own redis-py client, and builds both from this,
    so every read and write of the bus goes where it says. FastStream hands ``connection_class`` on to
    redis-py's ConnectionPool, as redis-py's own client does: a class that is not a socket (the in-memory
    twin of ``shared.bus.testing``) moves all of the bus's traffic at once.
    """

    url: str
    connection_class: type[aioredis.Connection] | None = None

    def client(self) -> aioredis.Redis:
        """A redis-py client with a pool of its own."""
        return aioredis.from_url(self.url, **self._pool_options())

    def broker(self, **options: Any) -> RedisBroker:
        """A FastStream broker; ``options`` are RedisBroker's own (middlewares, timeouts, logging)."""
        return RedisBroker(self.url, **self._pool_options(), **options)

    def _pool_options(self) -> dict[str, Any]:
        return {} if self.connection_class is None else {"connection_class": self.connection_class}
