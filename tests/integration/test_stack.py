"""The local launcher brings the stack up and down cleanly: real valkey-server, MLflow server and ingest
processes on free loopback ports, in a temporary state dir."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from shared.ops import launcher
from shared.ops.embedded import free_port, port_open, redis_answers
from shared.runtime.settings import MeshSettings

pytestmark = pytest.mark.integration

STACK = ("redis", "mlflow", "ingest", "features", "training", "registry", "monitor", "serving")


def _console() -> Console:
    return Console(file=io.StringIO(), width=200)


def _output(console: Console) -> str:
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _running(pid: int) -> bool:
    """Exists and is not a zombie (an exited child this process has not reaped yet)."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in "ZX"


def _group(pgid: int) -> list[int]:
    """Live members of a process group, e.g. MLflow's uvicorn workers with their parent."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and fields[2] == str(pgid):
            if fields[0] not in "ZX":
                members.append(int(entry.name))
    return members


@pytest.fixture
def stack_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MeshSettings]:
    """Free ports and a fresh state dir, through the environment as `mesh up` would see them."""
    for name in ("MESH_REDIS_URL", "MESH_MLFLOW_TRACKING_URI", "MESH_OTEL_EXPORTER", "MESH_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MESH_STATE_DIR", str(tmp_path / "state"))
    for name in ("REDIS", "MLFLOW", "INGEST", "FEATURES", "TRAINING", "REGISTRY", "MONITOR", "SERVING"):
        monkeypatch.setenv(f"MESH_{name}_PORT", str(free_port()))
    settings = MeshSettings()
    yield settings
    launcher.down(settings, console=_console())  # whatever a failed assertion left running


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A process the launcher did not start: down must never touch it."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait(timeout=10)


@pytest.mark.timeout(300)
def test_up_status_down(stack_env: MeshSettings, bystander: subprocess.Popen[bytes]) -> None:
    settings, console = stack_env, _console()
    state = settings.state_dir

    assert launcher.up(settings, console=console) == 0, _output(console)

    assert redis_answers(settings.redis_port)
    assert httpx.get(f"http://127.0.0.1:{settings.mlflow_port}/health", timeout=5).status_code == 200
    ready = httpx.get(f"http://127.0.0.1:{settings.ingest_port}/readyz", timeout=5)
    assert ready.status_code == 200, ready.text
    pids = {name: json.loads((state / "run" / f"{name}.pid").read_text())["pid"] for name in STACK}
    for name in STACK:
        assert (state / "logs" / f"{name}.log").stat().st_size > 0
    assert (state / "mlflow" / "mlflow.db").exists() and (state / "redis").is_dir()
    summary = _output(console)
    assert f"http://127.0.0.1:{settings.mlflow_port}" in summary and str(state / "logs") in summary
    processes = {pid for pgid in pids.values() for pid in _group(pgid)}
    assert set(pids.values()) <= processes

    # Idempotent: a second up leaves the running processes alone.
    again = _console()
    assert launcher.up(settings, console=again) == 0, _output(again)
    assert {n: json.loads((state / "run" / f"{n}.pid").read_text())["pid"] for n in STACK} == pids
    assert "already running" in _output(again)

    status = _console()
    assert launcher.status(settings, console=status) == 0, _output(status)
    assert _output(status).count("running, healthy") == len(STACK)
    assert "compose only" in _output(status)

    # The CLI reaches the same launcher through the environment.
    cli = subprocess.run(
        [str(Path(sys.executable).parent / "mesh"), "status"], capture_output=True, text=True, timeout=60
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr

    logs = _console()
    assert launcher.logs(settings, "ingest", lines=5, console=logs) == 0
    assert 0 < len(_output(logs).splitlines()) <= 5

    assert launcher.down(settings, console=_console()) == 0
    assert not [pid for pid in processes if _running(pid)]
    assert not list((state / "run").glob("*.pid"))
    assert not port_open(settings.ingest_port) and not redis_answers(settings.redis_port)
    assert bystander.poll() is None

    assert launcher.down(settings, console=_console()) == 0  # nothing left: harmless
    assert launcher.status(settings, console=_console()) == 1  # nothing running


@pytest.mark.timeout(120)
def test_a_component_that_dies_stops_the_ones_started_before_it(
    stack_env: MeshSettings, tmp_path: Path
) -> None:
    settings, console = stack_env, _console()
    port = free_port()
    compose = {
        "services": {
            "redis": {"image": "redis:7.4", "x-embedded": {"kind": "redis"}},
            "broken": {
                "command": ["python", "-c", "import sys; print('broken: no config'); sys.exit(3)"],
                "ports": [f"{port}:{port}"],
                "healthcheck": {"test": ["CMD", "mesh", "health", f"http://127.0.0.1:{port}/readyz"]},
                "depends_on": {"redis": {"condition": "service_healthy"}},
                "x-embedded": {"kind": "process"},
            },
        }
    }
    compose_file = tmp_path / "compose.yml"
    compose_file.write_text(json.dumps(compose))  # JSON is YAML

    assert launcher.up(settings, console=console, compose_file=compose_file) == 1
    out = _output(console)
    assert "broken: exited during start-up" in out and "broken: no config" in out  # the log's tail
    assert not list((settings.state_dir / "run").glob("*.pid"))
    assert not redis_answers(settings.redis_port)


@pytest.mark.timeout(60)
def test_down_ignores_a_pid_file_whose_pid_now_belongs_to_someone_else(
    stack_env: MeshSettings, bystander: subprocess.Popen[bytes]
) -> None:
    run = stack_env.state_dir / "run"
    run.mkdir(parents=True)
    record = {"pid": bystander.pid, "started": "1", "launched_at": 0.0, "command": ["valkey-server"]}
    (run / "redis.pid").write_text(json.dumps(record))

    assert launcher.down(stack_env, console=_console()) == 0
    assert bystander.poll() is None and _running(bystander.pid)
    assert not (run / "redis.pid").exists()


def test_up_refuses_a_port_taken_by_a_foreign_process(stack_env: MeshSettings) -> None:
    import socket

    with socket.create_server(("127.0.0.1", stack_env.redis_port)):
        console = _console()
        assert launcher.up(stack_env, console=console, services=["redis"]) == 1
    assert "in use by a process this launcher did not start" in _output(console)
    assert os.listdir(stack_env.state_dir / "run") == []
