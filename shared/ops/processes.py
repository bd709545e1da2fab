"""The local stack's processes: planned components started in dependency order, each healthy (its compose
health check) before the next; pid files under ``<state>/run`` let :func:`stop_all` stop exactly those
processes later, from another shell; their output goes to ``<state>/logs/<name>.log``.

Nothing here prints: :func:`start` reports to a :class:`StartProgress` and the other operations return
what they found (``shared.ops.launcher`` renders both for the ``mesh`` CLI).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from shared.ops.compose import (
    COMPOSE_ONLY,
    DEFAULT_COMPOSE_FILE,
    Component,
    component_url,
    external_kinds,
    launcher_env,
    load_compose,
    plan,
)
from shared.ops.embedded import port_open, redis_answers, start_valkey
from shared.runtime.retry import wait_until
from shared.runtime.settings import REPO_ROOT, MeshSettings

STOP_GRACE_S = 20.0


@dataclass
class PidRecord:
    """A pid file. ``started`` (kernel start time) tells our process from a later one reusing its pid."""

    pid: int
    started: str
    launched_at: float
    command: list[str]


class StateFiles:
    """Where the launcher keeps track of what it started, under the state dir."""

    def __init__(self, settings: MeshSettings) -> None:
        self.state = settings.state_dir.resolve()
        self.run, self.logs = self.state / "run", self.state / "logs"

    def pid(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def records(self) -> dict[str, PidRecord]:
        found: dict[str, PidRecord] = {}
        for path in sorted(self.run.glob("*.pid")) if self.run.is_dir() else []:
            try:
                found[path.stem] = PidRecord(**json.loads(path.read_text()))
            except (ValueError, TypeError):
                path.unlink(missing_ok=True)  # unreadable: nothing we could safely signal anyway
        return found


def registry_token(settings: MeshSettings) -> str:
    """The local stack's registry command token: ``MESH_REGISTRY_TOKEN``, else one kept in the state dir."""
    if settings.registry_token:
        return settings.registry_token
    path = settings.state_dir / "registry-token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24))
    return path.read_text().strip()


# --- liveness ----------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rpartition(")")[2].split()  # comm may contain spaces: fields start after its ")"


def _start_marker(pid: int) -> str | None:
    """Process start time, or None when there is no live process (zombies count as gone)."""
    if Path("/proc/self/stat").exists():
        fields = _stat(pid)
        return fields[19] if fields and fields[0] not in "ZX" else None
    result = subprocess.run(["ps", "-o", "stat=,lstart=", "-p", str(pid)], capture_output=True, text=True)
    out = result.stdout.strip()
    return out.split(None, 1)[1] if result.returncode == 0 and out and not out.startswith("Z") else None


def alive(record: PidRecord) -> bool:
    """The process the pid file names still runs (not merely some process with its pid)."""
    _reap(record.pid)
    return _start_marker(record.pid) == record.started


def _reap(pid: int) -> None:
    """Collect a dead child's exit status (only matters when up and down share a process, as in tests)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _group_alive(pgid: int) -> bool:
    if not Path("/proc/self/stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and fields[2] == str(pgid):
            if fields[0] not in "ZX":
                return True
    return False


# --- health ------------------------------------------------------------------------------------------


def _resolve(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """The venv's own console scripts first, so `mesh`/`mlflow` are this project's versions."""
    exe = argv[0]
    if os.sep in exe:
        return argv
    local = Path(sys.executable).parent / exe
    found = str(local) if os.access(local, os.X_OK) else shutil.which(exe, path=env.get("PATH"))
    if not found:
        raise FileNotFoundError(f"{exe!r} is neither in {local.parent} nor on PATH")
    return [found, *argv[1:]]


def probe(component: Component, env: Mapping[str, str]) -> bool:
    """One run of the component's compose health check, locally."""
    if component.kind == "redis":
        return component.port is not None and redis_answers(component.port)
    check = component.healthcheck
    if check is None:
        return component.port is None or port_open(component.port)
    if len(check) == 3 and check[:2] == ["mesh", "health"]:
        # `mesh health URL` in-process: same 2xx rule without a Python start-up on every poll.
        # trust_env=False: a configured HTTP proxy must not intercept loopback checks.
        try:
            return httpx.get(check[2], timeout=component.probe_timeout, trust_env=False).is_success
        except httpx.HTTPError:
            return False
    try:
        done = subprocess.run(
            _resolve(check, env), env=dict(env), cwd=REPO_ROOT, capture_output=True,
            timeout=component.probe_timeout,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


class StartFailed(Exception):
    """A component did not come up; ``log`` is its log file, whose last lines usually say why."""

    def __init__(self, name: str, reason: str, log: Path) -> None:
        super().__init__(f"{name}: {reason}")
        self.name, self.log = name, log


def _await_health(
    component: Component, running: Callable[[], bool], env: Mapping[str, str], log: Path
) -> None:
    def check() -> bool:
        if not running():
            raise StartFailed(component.name, "exited during start-up", log)
        return probe(component, env)

    try:
        wait_until(check, timeout=component.health_timeout, what=f"{component.name} health check")
    except TimeoutError as exc:
        raise StartFailed(component.name, str(exc), log) from None


def process_env(component: Component, env: Mapping[str, str]) -> dict[str, str]:
    """The environment a component runs (and is health-checked) with: the launcher's, then its own."""
    merged = {**env, **component.environment, "PYTHONUNBUFFERED": "1"}  # logs reach the file as they happen
    venv_bin = str(Path(sys.executable).parent)
    if venv_bin not in merged.get("PATH", "").split(os.pathsep):
        merged["PATH"] = os.pathsep.join(p for p in (venv_bin, merged.get("PATH", "")) if p)
    return merged


# --- start -------------------------------------------------------------------------------------------


class StartProgress(Protocol):
    """What :func:`start` reports as it goes."""

    def external(self, component: Component) -> None: ...

    def already_running(self, component: Component, pid: int) -> None: ...

    def starting(self, component: Component) -> AbstractContextManager[object]: ...

    def healthy(self, component: Component, pid: int) -> None: ...

    def failed(self, error: StartFailed | KeyboardInterrupt) -> None:
        """Called before what this start had started is stopped again, which may take a while."""


def _launch(component: Component, env: Mapping[str, str], files: StateFiles, started: list[str]) -> PidRecord:
    """Start one component, record its pid (then it is ours to stop), and wait until it is healthy."""
    log_path = files.log(component.name)
    if component.port is not None and port_open(component.port):
        raise StartFailed(
            component.name,
            f"port {component.port} is in use by a process this launcher did not start",
            log_path,
        )
    for directory in component.mkdir:
        directory.mkdir(parents=True, exist_ok=True)
    proc_env = process_env(component, env)
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} mesh up: {shlex.join(component.command)}\n")
    if component.kind == "redis":
        assert component.port is not None  # plan() gives redis a port, and its data dir as mkdir[0]
        try:
            proc = start_valkey(component.port, component.mkdir[0], log_path, persistent=True)
        except (OSError, TimeoutError) as exc:
            raise StartFailed(component.name, str(exc), log_path) from None
        argv = component.command
    else:
        try:
            argv = _resolve(component.command, proc_env)
        except FileNotFoundError as exc:
            raise StartFailed(component.name, str(exc), log_path) from None
        with log_path.open("ab") as log:
            # A session of its own = a process group of its own: stopping signals the children (MLflow's
            # uvicorn workers) with it, and a Ctrl-C in the launching shell doesn't reach it.
            proc = subprocess.Popen(
                argv, env=proc_env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
    record = PidRecord(proc.pid, _start_marker(proc.pid) or "", time.time(), argv)
    files.pid(component.name).write_text(json.dumps(record.__dict__))
    started.append(component.name)
    _await_health(component, lambda: proc.poll() is None, proc_env, log_path)
    return record


def start(
    settings: MeshSettings, order: Sequence[Component], env: Mapping[str, str], progress: StartProgress
) -> None:
    """Bring up ``order`` (see ``compose.start_order``) under the launcher environment ``env``.

    Idempotent: a live one of ours only has to be healthy (it may still be starting). A component with a
    user-given URL is external and left alone. On a failure or Ctrl-C, what this call started is stopped
    again (older ones stay up) and the error is raised.
    """
    files = StateFiles(settings)
    files.run.mkdir(parents=True, exist_ok=True)
    files.logs.mkdir(parents=True, exist_ok=True)
    external, records = external_kinds(settings), files.records()
    started: list[str] = []
    try:
        for component in order:
            if component.kind in external:
                progress.external(component)
                continue
            record = records.get(component.name)
            if record is not None and alive(record):
                running = functools.partial(alive, record)
                _await_health(component, running, process_env(component, env), files.log(component.name))
                progress.already_running(component, record.pid)
                continue
            with progress.starting(component):
                record = _launch(component, env, files, started)
            progress.healthy(component, record.pid)
    except (StartFailed, KeyboardInterrupt) as exc:
        progress.failed(exc)
        fresh = files.records()
        for name in reversed(started):
            if name in fresh:
                _stop(name, fresh[name], files)
        raise


# --- stop --------------------------------------------------------------------------------------------


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # gone between the check and the signal
        os.killpg(pgid, sig)


def _stop(name: str, record: PidRecord, files: StateFiles) -> bool:
    """Stop a verified process of ours and its process group; False if it would not die."""
    if alive(record):
        _signal_group(record.pid, signal.SIGTERM)
        try:
            wait_until(
                lambda: not alive(record) and not _group_alive(record.pid), timeout=STOP_GRACE_S, what=name
            )
        except TimeoutError:
            # Leader or stragglers are still in the group we created, so the group id is still ours.
            _signal_group(record.pid, signal.SIGKILL)
            try:
                wait_until(lambda: not alive(record), timeout=5, what=name)
            except TimeoutError:
                return False  # keep the pid file: it still names a live process of ours
    files.pid(name).unlink(missing_ok=True)
    return True


@dataclass(frozen=True)
class Stopped:
    name: str
    pid: int
    was_running: bool
    stopped: bool  # False: still alive after SIGKILL, its pid file kept


def stop_all(settings: MeshSettings, report: Callable[[Stopped], None]) -> int:
    """Stop every process the pid files name, newest first, so services go before the Redis and MLflow
    they depend on; ``report`` hears of each as it is done. Returns how many pid files there were."""
    files = StateFiles(settings)
    records = files.records()
    for name, record in sorted(records.items(), key=lambda item: item[1].launched_at, reverse=True):
        was_running = alive(record)
        report(Stopped(name, record.pid, was_running, _stop(name, record, files)))
    return len(records)


# --- status and logs ---------------------------------------------------------------------------------


class State(enum.Enum):
    COMPOSE_ONLY = enum.auto()
    EXTERNAL = enum.auto()  # a user-given URL: not ours to run
    STOPPED = enum.auto()
    CRASHED = enum.auto()  # its pid file is left but its process is gone
    HEALTHY = enum.auto()
    UNHEALTHY = enum.auto()
    NOT_PLANNED = enum.auto()  # running, but started from an older compose file


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    kind: str  # as planned; "?" for one the compose file no longer has
    pid: int | None
    state: State
    url: str


def survey(settings: MeshSettings) -> list[ComponentStatus]:
    """Each component of the compose file as it is now, then the processes of ours it no longer plans."""
    env, files, external = launcher_env(settings), StateFiles(settings), external_kinds(settings)
    records = files.records()
    found: list[ComponentStatus] = []
    for component in plan(load_compose(DEFAULT_COMPOSE_FILE), env):
        record = records.pop(component.name, None)
        if component.kind == COMPOSE_ONLY:
            state = State.COMPOSE_ONLY
        elif component.kind in external:
            state = State.EXTERNAL
        elif record is None:
            state = State.STOPPED
        elif not alive(record):
            state = State.CRASHED
        else:
            healthy = probe(component, process_env(component, env))
            state = State.HEALTHY if healthy else State.UNHEALTHY
        pid = record.pid if record else None
        found.append(
            ComponentStatus(component.name, component.kind, pid, state, component_url(component, env))
        )
    for name, record in records.items():
        state = State.NOT_PLANNED if alive(record) else State.STOPPED
        found.append(ComponentStatus(name, "?", record.pid, state, ""))
    return found


def log_files(settings: MeshSettings, service: str | None) -> list[Path]:
    """``service``'s log file, or every one when None (whether they exist or not is the caller's to see)."""
    logs = StateFiles(settings).logs
    return [logs / f"{service}.log"] if service else sorted(logs.glob("*.log"))


def whole_lines_end(path: Path) -> int:
    """Where the log's last whole line ends now: what a tail shows and a follower continues from."""
    with path.open("rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - 64 * 1024))
        block = fh.read(size)
    cut = block.rfind(b"\n")
    return size if cut < 0 and size > len(block) else size - len(block) + cut + 1


def tail(path: Path, lines: int, end: int | None = None) -> list[str]:
    """The last ``lines`` lines (of the first ``end`` bytes), reading backwards in blocks so a large log
    isn't read whole."""
    with path.open("rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        end = size if end is None else min(end, size)
        data, pos = b"", end
        while pos > 0 and data.count(b"\n") <= lines:
            step = min(64 * 1024, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
    return data.decode("utf-8", "replace").splitlines()[-lines:] if lines > 0 else []
