"""Waiting a bounded time for work being stopped.

On Python 3.11 redis-py writes a command through ``asyncio.wait_for``, which loses a cancellation arriving
as the write completes: a task cancelled then carries on. ``await task`` waits as long as it runs, and so
does ``asyncio.timeout``, whose deadline is itself only a cancellation. ``asyncio.wait`` returns at its
deadline whatever the task does, so a service's shutdown ends even when one of its loops did not hear.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

STOP_LIMIT_S = 10.0  # how long a background loop asked to stop may take before it is abandoned


async def finished_within(work: Awaitable[Any], seconds: float) -> bool:
    """Await ``work`` (a coroutine, or a task already asked to stop) for at most ``seconds``.

    True when it ended in time (its exception, if any, is raised; a cancelled task counts as ended);
    False when it is abandoned at the deadline, cancelled once more on the way out."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        return False
    if not task.cancelled():
        task.result()
    return True
