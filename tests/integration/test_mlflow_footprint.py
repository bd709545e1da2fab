"""The embedded MLflow server, as compose declares it, runs without MLflow's job runner: its seven huey
consumer processes took ~2 GB idle, and the mesh uses no MLflow jobs."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.support.processes import process_tree

pytestmark = pytest.mark.integration


def _server_pid(port: int) -> int:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"mlflow") for a in argv[:2]) and b"server" in argv and str(port).encode() in argv:
            return int(proc.name)
    raise AssertionError(f"no mlflow server process on port {port}")


def test_the_mlflow_server_starts_no_job_runner(mlflow_uri: str) -> None:
    port = urlparse(mlflow_uri).port
    assert port is not None
    tree = process_tree(_server_pid(port))
    assert not [cmd for _, cmd in tree if "huey" in cmd], tree
    assert len(tree) <= 3, tree  # the server command, uvicorn, at most one worker
