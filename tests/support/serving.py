"""Serving in tests: a served model's provenance without a model (a test double for the parts that do not
predict), and the serving service itself run as a subprocess, as compose runs it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from services.serving.holder import LoadedModel
from shared.ops.embedded import free_port
from shared.runtime.settings import MeshSettings
from tests.support.data import CONFIG_DIR
from tests.support.processes import kill_all_with_env


def loaded_model_stub(**fields: Any) -> LoadedModel:
    """A served model with placeholder provenance and no model, for the parts of serving that do not
    predict (validation reads the record model, columns and schema; the sampler only name and version)."""
    placeholders: dict[str, Any] = {
        "name": "churn-demo",
        "version": "3",
        "run_id": "run",
        "feature_set_id": "fs",
        "snapshot_ids": ["s1"],
        "loaded_at": "2026-01-01T00:00:00+00:00",
        "model": None,
        "record": None,
        "columns": [],
        "schema": None,
    }
    return LoadedModel(**{**placeholders, **fields})


def demo_only_config(root: Path, model_name: str) -> Path:
    """deploy/config copied under ``root``, declaring only the demo's model, renamed ``model_name`` (the
    session's MLflow is shared: each module serves a name of its own); the config dir."""
    config_dir = root / "config"
    shutil.copytree(CONFIG_DIR, config_dir)
    for path in (config_dir / "models").glob("*.yaml"):
        if path.name != "demo.yaml":
            path.unlink()
    demo = config_dir / "models" / "demo.yaml"
    demo.write_text(demo.read_text().replace("model_name: churn-demo\n", f"model_name: {model_name}\n"))
    return config_dir


def serving_env(settings: MeshSettings) -> dict[str, str]:
    """The environment of ``mesh run serving`` on the mesh of ``settings`` (its Redis, MLflow and config
    dir), following promotions within 3 s and publishing every answered record for the monitor."""
    return {
        "MESH_REDIS_PORT": str(settings.redis_port),
        "MESH_MLFLOW_TRACKING_URI": settings.effective_mlflow_uri,
        "MESH_CONFIG_DIR": str(settings.config_dir),
        "MESH_SERVING_RECONCILE_S": "3",
        "MESH_SERVING_SAMPLE_RATE": "1",
    }


class ServingServer:
    """``mesh run serving`` (bentoml serve, as compose runs it) as a subprocess on a free port, in a state
    directory of its own (which finds its workers, however BentoML starts them, when it is stopped)."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "BENTOML_"))}
        self.env = {
            **base,
            "MESH_HOST": "127.0.0.1",
            "MESH_SERVING_PORT": str(self.port),
            "MESH_STATE_DIR": str(root / "state"),
            "BENTOML_HOME": str(root / "bentoml"),
            **env,
        }
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "serving.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServingServer:
        self.root.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "mesh"), "run", "serving"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def alive(self) -> bool:
        """Up and answering /healthz; fails (with the log's tail) if the server exited."""
        assert self.proc is not None and self.proc.poll() is None, self.log_tail()
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        kill_all_with_env("MESH_STATE_DIR", self.env["MESH_STATE_DIR"])
