"""Work a service does every so often beside its consumers (the monitor's window check, data pruning):
started and stopped with the app, a failed round logged and tried again at the next one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from shared.runtime.stopping import STOP_LIMIT_S, finished_within


class Periodic:
    """``work()`` every ``interval`` seconds, the first time one interval after ``start``."""

    def __init__(self, name: str, interval: float, work: Callable[[], Awaitable[None]], log: Any) -> None:
        self.name, self.interval, self.work, self.log = name, interval, work, log
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self, limit_s: float = STOP_LIMIT_S) -> None:
        """Ends the loop: at once when idle, else after the round under way, abandoned after ``limit_s``.

        A flag as well as a cancel: a cancel lost in a Redis call (see shared.runtime.stopping) surfaces
        as a failed round, which the loop would log and follow with the next one, forever."""
        self._stopping = True
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        if not await finished_within(task, limit_s):
            self.log.error("periodic work did not stop", work=self.name, after_s=limit_s)

    async def _run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.interval)
            if self._stopping:
                return
            try:
                await self.work()
            except Exception:  # MLflow away, Redis restarting: the next round tries again
                self.log.exception("periodic work failed", work=self.name)
