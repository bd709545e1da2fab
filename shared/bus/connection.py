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
    # redis-py gives up on a reply after 5 s by default; a blocking read (XREAD(GROUP) BLOCK) legitimately
    # waits up to its block time, so the bus sets this above it. Left at 5 s, a longer block raised
    # TimeoutError, FastStream backed off 5 s, and a broadcast read from "$" missed what came meanwhile.
    socket_timeout_s: float | None = None

    def client(self) -> aioredis.Redis:
        """A redis-py client with a pool of its own."""
        return aioredis.from_url(self.url, **self._pool_options())

    def broker(self, **options: Any) -> RedisBroker:
        """A FastStream broker; ``options`` are RedisBroker's own (middlewares, timeouts, logging)."""
        return RedisBroker(self.url, **self._pool_options(), **options)

    def _pool_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.connection_class is not None:
            options["connection_class"] = self.connection_class
        if self.socket_timeout_s is not None:
            options["socket_timeout"] = self.socket_timeout_s
        return options
