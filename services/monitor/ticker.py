"""The periodic window check: windows that traffic alone would leave open are closed by time."""

from __future__ import annotations

import asyncio
import contextlib
import time

from services.monitor.decisions import act_on
from services.monitor.deps import MonitorDeps

TICK_S = 5.0


class WindowTicker:
    """Every ``interval`` seconds, evaluates the windows that are due; started and stopped with the app."""

    def __init__(self, deps: MonitorDeps, interval: float = TICK_S) -> None:
        self.deps = deps
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="monitor-windows")

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
                await act_on(self.deps, await asyncio.to_thread(self.deps.monitor.due, time.time()), None)
            except Exception:
                self.deps.log.exception("window tick failed")
