"""Running the ``mesh`` CLI in-process beside services of the same process."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import structlog


@contextlib.contextmanager
def logs_kept_apart() -> Iterator[None]:
    """structlog (unconfigured, as in a test) prints to whatever ``sys.stdout`` is as it logs, and
    CliRunner swaps ``sys.stdout`` for its capture while a command runs: a line logged meanwhile by a
    consumer in this process would land in the command's output. Inside, logs go to the stdout of now.

    A WriteLogger, not a PrintLogger: given the very stdout structlog was imported under (pytest's
    capture), a PrintLogger still prints to whatever ``sys.stdout`` is at the time."""
    config = structlog.get_config()
    structlog.configure(logger_factory=structlog.WriteLoggerFactory(file=sys.stdout))
    try:
        yield
    finally:
        structlog.configure(**config)
