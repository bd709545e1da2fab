"""An in-memory twin of Redis for the bus, for tests (as FastStream ships ``faststream/redis/testing.py``).

``memory_connection()`` is a ``RedisConnection`` whose clients, FastStream's broker, the bus's own and a
test's, all talk to one fakeredis server inside this process: streams, consumer groups and their pending
entries, XAUTOCLAIM, XPENDING delivery counts, XCLAIM, keys with a TTL, everything the delivery rules
use. Real Redis stays the reference: the delivery tests run against both.

Needs the ``dev`` dependency group (fakeredis); nothing in the services imports this module.
"""

from __future__ import annotations

from typing import Any

from fakeredis import FakeServer
from fakeredis.aioredis import AsyncFakeSocket, FakeAsyncRedisConnection, FakeReader, FakeWriter

from shared.bus.connection import RedisConnection

# valkey-server 8 answers as Redis 7.2 does; the reply shapes of XAUTOCLAIM and XINFO follow the version.
SERVER_VERSION = (7, 2)


class _BlockingStreamSocket(AsyncFakeSocket):
    """fakeredis 2.40.0's socket, except that XREADGROUP with BLOCK and COUNT waits as Redis does.

    fakeredis answers such a read at once with an empty reply when nothing is there (and again on any
    change to any key while it waits): FastStream would poll in a tight loop, a core at 100%. ``None``
    from the read is what keeps fakeredis's blocking loop waiting, for an entry or the timeout.
    """

    def _xreadgroup(self, *args: Any, **kwargs: Any) -> dict[bytes, Any] | None:
        read: dict[bytes, Any] | None = super()._xreadgroup(*args, **kwargs)
        return read or None


class _MemoryConnection(FakeAsyncRedisConnection):
    """A redis-py connection to the twin's in-memory server, speaking through ``_BlockingStreamSocket``."""

    async def _connect(self) -> None:
        # As FakeBaseAsyncConnection._connect, with the socket that blocks; the twin's server is never down.
        self._sock = _BlockingStreamSocket(
            self._server,
            self.db,
            client_class=self._client_class,
            lua_modules=self._lua_modules,
            client_info=self._client_info,
        )
        self._reader = FakeReader(self._sock)
        self._writer = FakeWriter(self._sock)


def memory_connection() -> RedisConnection:
    """A new, empty in-memory Redis: every client built from the returned connection shares it."""
    server = FakeServer(version=SERVER_VERSION)

    class MemoryConnection(_MemoryConnection):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(server=server, **kwargs)

    return RedisConnection("redis://memory/0", connection_class=MemoryConnection)
