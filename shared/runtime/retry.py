"""The one way the mesh waits: bounded in time, backing off, naming what it waited for; no fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

FIRST_DELAY_S = 0.05
MAX_DELAY_S = 1.0


def _next(delay: float, cap: float) -> float:
    return min(delay * 1.5, cap)


def wait_until(
    check: Callable[[], T | None], *, timeout: float, what: str, interval: float = FIRST_DELAY_S
) -> T:
    """Call ``check`` with backoff until it returns something truthy; return it, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s")
        time.sleep(interval)
        interval = _next(interval, MAX_DELAY_S)
    return result


async def wait_for(
    check: Callable[[], Awaitable[T | None]], *, timeout: float, what: str, interval: float = FIRST_DELAY_S
) -> T:
    """Await ``check`` with backoff until it returns something truthy; return it, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s")
        await asyncio.sleep(interval)
        interval = _next(interval, MAX_DELAY_S)
    return result


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    retry_on: tuple[type[BaseException], ...],
    timeout: float,
    what: str,
    on_retry: Callable[[BaseException, float], None] | None = None,
    max_delay: float = 2.0,
) -> T:
    """Await ``call`` until it stops raising ``retry_on``; after ``timeout`` seconds the last error is raised
    as TimeoutError naming ``what``. ``on_retry(error, delay)`` may log each failed attempt."""
    deadline = time.monotonic() + timeout
    delay = FIRST_DELAY_S * 2
    while True:
        try:
            return await call()
        except retry_on as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{what} still failing after {timeout:.0f}s: {exc}") from exc
            if on_retry is not None:
                on_retry(exc, delay)
            await asyncio.sleep(delay)
            delay = _next(delay, max_delay)
