"""The embedded MLflow server, as compose declares it, is one process: no job runner (its seven huey
consumer processes took ~2 GB idle, and the mesh uses no MLflow jobs), and no ``mlflow server`` parent
waiting on its uvicorn child (~300 MB; shared/ops/mlflow_server.py)."""

from __future__ import annotations

from urllib.parse import urlparse

import httpx
import pytest

from tests.support.processes import pid_by_argv, process_tree

pytestmark = pytest.mark.integration


def test_the_mlflow_server_is_one_uvicorn_process_without_a_job_runner(mlflow_uri: str) -> None:
    port = urlparse(mlflow_uri).port
    assert port is not None
    server = pid_by_argv(b"uvicorn", b"--port", str(port).encode())
    tree = process_tree(server)
    assert len(tree) == 1, tree
    assert "mlflow.server.fastapi_app:app" in tree[0][1], tree
    with pytest.raises(LookupError):
        pid_by_argv(b"mlflow", b"server", str(port).encode())
    assert httpx.get(f"{mlflow_uri}/health", timeout=5).is_success
