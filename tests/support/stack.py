"""The whole mesh as processes, as ``mesh up`` starts it from docker-compose.yml, on free loopback ports."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from shared.ops import launcher
from shared.ops.driver import MeshDriver
from shared.ops.embedded import free_port
from shared.runtime.settings import SERVICE_NAMES, MeshSettings


def stack_settings(state: Path, **overrides: Any) -> MeshSettings:
    """Settings of a stack in ``state`` with every component on a free port; ``overrides`` are settings."""
    ports: dict[str, Any] = {f"{name}_port": free_port() for name in ("redis", "mlflow", *SERVICE_NAMES)}
    return MeshSettings(state_dir=state, **ports, **overrides)


@contextlib.contextmanager
def running_stack(settings: MeshSettings, *, wait_timeout: float = 240) -> Iterator[MeshDriver]:
    """``mesh up`` with ``settings``, a driver of it while inside, ``mesh down`` after whatever happens."""
    output = io.StringIO()
    console = Console(file=output, width=200)
    code = launcher.up(settings, console=console)
    try:
        assert code == 0, output.getvalue()
        with MeshDriver(settings, wait_timeout=wait_timeout) as driver:
            yield driver
    finally:
        launcher.down(settings, console=console)
