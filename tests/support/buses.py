"""Running buses in a test's event loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from shared.bus import MeshBus


@contextlib.asynccontextmanager
async def running(*buses: MeshBus) -> AsyncIterator[None]:
    """The buses started, and stopped at the end whatever happens."""
    async with contextlib.AsyncExitStack() as stack:
        for bus in buses:
            await bus.start()
            stack.push_async_callback(bus.stop)
        yield
