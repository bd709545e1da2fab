"""``mesh run serving`` starts the BentoML service the way compose does, in the foreground."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.ml.modeling import model_configs
from shared.ops.embedded import free_port
from shared.runtime.retry import wait_until
from tests.support.data import CONFIG_DIR
from tests.support.processes import kill_all_with_env, pids_with_env

pytestmark = pytest.mark.integration


@pytest.fixture
def serving_env(redis_port: int, tmp_path: Path) -> dict[str, str]:
    """The test's Redis, a free serving port, no MLflow (serving is alive without a model)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "BENTOML_"))}
    return {
        **env,
        "MESH_HOST": "127.0.0.1",
        "MESH_REDIS_PORT": str(redis_port),
        "MESH_SERVING_PORT": str(free_port()),
        "MESH_MLFLOW_PORT": str(free_port()),
        "MESH_STATE_DIR": str(tmp_path / "state"),
        "BENTOML_HOME": str(tmp_path / "bentoml"),
    }


@pytest.fixture
def mesh_run_serving(serving_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp_path / "serving.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mesh"), "run", "serving"],
        env=serving_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield proc
    if proc.poll() is None:  # a failed assertion left it running: it goes, with its workers
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    kill_all_with_env("MESH_STATE_DIR", serving_env["MESH_STATE_DIR"])
    log.close()


@pytest.mark.timeout(240)
def test_mesh_run_serving_answers_and_stops_on_sigterm(
    mesh_run_serving: subprocess.Popen[bytes], serving_env: dict[str, str], tmp_path: Path
) -> None:
    proc = mesh_run_serving
    base = f"http://127.0.0.1:{serving_env['MESH_SERVING_PORT']}"

    def alive() -> bool:
        assert proc.poll() is None, (tmp_path / "serving.log").read_text()[-3000:]
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(alive, timeout=180, what="mesh run serving")
    # Up, with the service's own routes mounted and its deps built: alive, not ready without a model.
    declared = [config.model_name for config in model_configs(CONFIG_DIR)]
    model = httpx.get(f"{base}/model", timeout=5)
    assert model.status_code == 503, model.text
    assert model.json()["error"] == "no model is serving yet" and model.json()["declared"] == declared
    models = httpx.get(f"{base}/models", timeout=5)
    assert models.status_code == 200 and models.json()["models"] == []
    assert models.json()["declared"] == declared and models.headers["x-serving-worker"].isdigit()
    assert httpx.get(f"{base}/readyz", timeout=5).status_code == 503
    # The process mesh started is now bentoml's server itself, as in compose: no wrapper in between.
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
    assert [b"bentoml", b"serve", b"services.serving.app:MeshServing"] == cmdline[2:5]

    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    state_dir = serving_env["MESH_STATE_DIR"]
    wait_until(lambda: not pids_with_env("MESH_STATE_DIR", state_dir), timeout=30, what="workers stopped")
