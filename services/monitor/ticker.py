"""The periodic window check: windows that traffic alone would leave open are closed by time, and work a
killed monitor left behind (a full window, unjudged labels) is picked up."""

from __future__ import annotations

import time

from services.monitor.deps import MonitorDeps
from services.monitor.evaluation import evaluate_window, judge_labels
from services.monitor.models import MonitoredModel
from shared.runtime.periodic import Periodic

TICK_S = 5.0


def window_ticker(deps: MonitorDeps, interval: float = TICK_S) -> Periodic:
    """Every ``interval`` seconds, evaluates each model's windows that are due."""

    async def tick() -> None:
        for model in deps.models.all():
            try:
                await _check(deps, model)
            except Exception:  # one model's failure (its MLflow reference away) must not stop the others
                deps.log.exception("window tick failed", model=model.name)

    return Periodic("monitor-windows", interval, tick, deps.log)


async def _check(deps: MonitorDeps, model: MonitoredModel) -> None:
    now = time.time()
    for version, (rows, started) in (await deps.store.open_windows(model.name)).items():
        age = now - started if started is not None else 0.0
        if model.config.window.rows_to_close(rows, age, by_clock=True):
            await evaluate_window(deps, model, version, "due", None)
    await judge_labels(deps, model, None)
