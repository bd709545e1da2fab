"""A service's shutdown ends, with its bus stopped, whatever one of its shutdown hooks does: a hook that
hangs (a loop whose cancel was lost in a Redis call) once left a monitor consuming inside the test
process, and every later test that used the ``monitor`` group failed for it."""

from __future__ import annotations

import time

import pytest

from shared import events
from shared.events import Envelope, ModelPromoted
from shared.runtime.service import ServiceDeps, ServiceRuntime
from shared.runtime.settings import MeshSettings
from tests.support.cancellation import DeafWork
from tests.support.servers import serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def _ignore(_: ServiceDeps, __: Envelope[ModelPromoted]) -> None:
    return None


def _runtime(settings: MeshSettings) -> ServiceRuntime:
    runtime = ServiceRuntime("shutdown-probe", settings.model_copy(update={"bus_graceful_timeout_s": 0.5}))
    runtime.consume(events.MODEL_PROMOTED, _ignore, ServiceDeps.of(runtime))
    return runtime


async def test_a_hook_deaf_to_cancellation_is_abandoned_and_the_bus_still_stops(
    settings: MeshSettings,
) -> None:
    runtime = _runtime(settings)
    deaf = DeafWork()
    runtime.on_shutdown(deaf)
    async with serve(runtime.asgi()):
        assert runtime.bus.started
        began = time.monotonic()
    took = time.monotonic() - began
    deaf.released = True
    assert took < runtime.bus.stop_limit_s + 5
    assert not runtime.bus.started
    assert not runtime.bus.broker.running


async def test_a_failing_hook_does_not_keep_the_bus_running(settings: MeshSettings) -> None:
    runtime = _runtime(settings)

    async def fails() -> None:
        raise RuntimeError("hook broke")

    runtime.on_shutdown(fails)
    async with serve(runtime.asgi()):
        pass
    assert not runtime.bus.started
    assert not runtime.bus.broker.running
