"""The log promise of shared/runtime/logging.py, on a real bus: while a consumer handles an event, every line
logged (by the handler, by a library through stdlib logging, by the bus itself) carries the event's
``event_id`` and ``correlation_id`` and the ``trace_id`` the event travelled with.

Read from the JSON lines the configured logging writes: ``structlog.testing.capture_logs`` replaces the
configured processors, the very ones that add these fields.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog

from shared import events
from shared.bus import MeshBus
from shared.events import Envelope, LabelObserved
from shared.runtime.logging import configure_logging, get_logger
from shared.runtime.retry import wait_for
from shared.runtime.settings import MeshSettings
from shared.runtime.telemetry import setup_tracing

pytestmark = pytest.mark.integration

SERVICE = "log-check"


@pytest.fixture
def log_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Logging configured as a service configures it, writing to a buffer in place of stdout; each call
    parses what was written so far, one JSON object a line. The configuration before is restored after."""
    structlog_config, bound = structlog.get_config(), structlog.contextvars.get_contextvars()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buffer)  # configure_logging renders to the sys.stdout it finds
    configure_logging(SERVICE, "INFO")
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    structlog.configure(**structlog_config)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**bound)
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_every_line_logged_while_an_event_is_handled_carries_its_ids_and_trace(
    settings: MeshSettings,
    redis_client: aioredis.Redis,
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    provider = setup_tracing(SERVICE, settings)
    bus = MeshBus(settings, SERVICE, tracer_provider=provider)
    handler_log, library_log = get_logger("mesh.test"), logging.getLogger("a.library")
    attempts: list[Envelope[LabelObserved]] = []

    async def handle(event: Envelope[LabelObserved]) -> None:
        attempts.append(event)
        handler_log.info("handling", attempt=len(attempts))
        library_log.warning("a library line")
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")  # so the bus logs a failure of its own, then retries

    bus.consume(events.LABELS, handle)
    await bus.start()
    try:
        with provider.get_tracer("test").start_as_current_span("upstream") as upstream:
            event = await bus.emit(
                events.LABELS,
                LabelObserved(request_id="r", label=1, observed_at=datetime(2026, 1, 1, tzinfo=UTC)),
            )

        async def handled() -> bool:
            pending = await redis_client.xpending(events.LABELS, SERVICE)
            return len(attempts) == 2 and pending["pending"] == 0

        await wait_for(handled, timeout=30, what="the event handled on its second attempt")
    finally:
        await bus.stop()
        provider.shutdown()

    trace_id = format(upstream.get_span_context().trace_id, "032x")
    # The handler's lines on both attempts and, on the failed one, the bus's own.
    while_handling = [
        line for line in log_lines() if line["event"] in ("handling", "a library line", "handler failed")
    ]
    assert [line["event"] for line in while_handling] == [
        "handling", "a library line", "handler failed", "handling", "a library line"
    ]  # fmt: skip
    for line in while_handling:
        assert line["service"] == SERVICE, line
        assert line["event_id"] == event.event_id, line
        assert line["correlation_id"] == event.correlation_id, line
        assert line["trace_id"] == trace_id, line  # the trace crossed the bus with the event
