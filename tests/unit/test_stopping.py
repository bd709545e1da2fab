"""Stopping ends even when a cancellation is lost: on Python 3.11 redis-py can swallow one (see
shared.runtime.stopping), and a monitor whose window ticker never stopped once kept its bus consuming
inside the test process, taking later tests' events."""

from __future__ import annotations

import asyncio
import time

import pytest

from shared.runtime.logging import get_logger
from shared.runtime.periodic import Periodic
from shared.runtime.stopping import finished_within
from tests.support.cancellation import DeafWork

pytestmark = pytest.mark.timeout(20)  # before the fix, a stop waited forever

log = get_logger("test.stopping")


async def test_a_round_that_loses_the_cancel_still_ends_the_loop() -> None:
    started = asyncio.Event()
    rounds = 0

    async def work() -> None:  # what a Redis call does when the cancel arrives as its write completes
        nonlocal rounds
        rounds += 1
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise TimeoutError("the cancel became a timeout") from None

    periodic = Periodic("lossy", 0.01, work, log)
    await periodic.start()
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(periodic.stop(), 5)
    assert rounds == 1


async def test_a_round_that_ignores_stopping_is_abandoned_at_the_limit() -> None:
    work = DeafWork()
    periodic = Periodic("deaf", 0.0, work, log)
    await periodic.start()
    await asyncio.sleep(0.05)
    began = time.monotonic()
    await asyncio.wait_for(periodic.stop(limit_s=0.2), 5)
    assert 0.2 <= time.monotonic() - began < 2
    work.released = True


async def test_an_idle_loop_stops_at_once() -> None:
    async def work() -> None:
        raise AssertionError("not due yet")

    periodic = Periodic("idle", 3600, work, log)
    await periodic.start()
    began = time.monotonic()
    await periodic.stop()
    assert time.monotonic() - began < 0.5


async def test_finished_within_reports_what_ended_and_raises_its_error() -> None:
    assert await finished_within(asyncio.sleep(0), 1)

    async def fails() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await finished_within(fails(), 1)

    task = asyncio.create_task(asyncio.sleep(3600))
    task.cancel()
    assert await finished_within(task, 1)  # a cancelled task has ended
    assert not await finished_within(asyncio.sleep(3600), 0.05)
