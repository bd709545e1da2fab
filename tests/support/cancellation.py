"""Work that does not hear a cancellation: what a loop does on Python 3.11 when redis-py loses the cancel
(shared.runtime.stopping)."""

from __future__ import annotations

import asyncio


class DeafWork:
    """Awaitable work that goes on through every cancel until ``released`` is set."""

    def __init__(self) -> None:
        self.released = False

    async def __call__(self) -> None:
        while not self.released:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                pass
