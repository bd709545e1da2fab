"""The embedded MLflow server, as compose declares it, runs without MLflow's job runner: its seven huey
consumer processes took ~2 GB idle, and the mesh uses no MLflow jobs."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from tests.support.processes import pid_by_argv, process_tree

pytestmark = pytest.mark.integration


def test_the_mlflow_server_starts_no_job_runner(mlflow_uri: str) -> None:
    port = urlparse(mlflow_uri).port
    assert port is not None
    tree = process_tree(pid_by_argv(b"mlflow", b"server", str(port).encode()))
    assert not [cmd for _, cmd in tree if "huey" in cmd], tree
    assert len(tree) <= 3, tree  # the server command, uvicorn, at most one worker
