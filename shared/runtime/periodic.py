"""Work a service does every so often beside its consumers (the monitor's window check, data pruning):
started and stopped with the app, a failed round logged and tried again at the next one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any


class Periodic:
    """``work()`` every ``interval`` seconds, the first time one interval after ``start``."""

    def __init__(self, name: str, interval: float, work: Callable[[], Awaitable[None]], log: Any) -> None:
        self.name, self.interval, self.work, self.log = name, interval, work, log
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.work()
            except Exception:  # MLflow away, Redis restarting: the next round tries again
                self.log.exception("periodic work failed", work=self.name)
