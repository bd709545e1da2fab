"""The periodic window check: windows that traffic alone would leave open are closed by time, and work a
killed monitor left behind (a full window, unjudged labels) is picked up."""

from __future__ import annotations

import asyncio
import contextlib
import time

from services.monitor.deps import MonitorDeps
from services.monitor.evaluation import evaluate_window, judge_labels
from services.monitor.models import MonitoredModel

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
            for model in self.deps.models.all():
                try:
                    await self._check(model)
                except Exception:  # MLflow away, Redis restarting: the next tick tries again
                    self.deps.log.exception("window tick failed", model=model.name)

    async def _check(self, model: MonitoredModel) -> None:
        now = time.time()
        for version, (rows, started) in (await self.deps.store.open_windows(model.name)).items():
            age = now - started if started is not None else 0.0
            if model.config.window.rows_to_close(rows, age, by_clock=True):
                await evaluate_window(self.deps, model, version, "due", None)
        await judge_labels(self.deps, model, None)
