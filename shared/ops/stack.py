"""The local stack launcher: runs ``docker-compose.yml`` as loopback processes on a machine without Docker.

The compose file stays the single description of the stack. :func:`plan` turns it into
:class:`Component` s: values interpolated from the launcher's environment, container host names
rewritten to 127.0.0.1, and each service's ``x-embedded`` kind deciding what runs here (``redis``:
the embedded valkey-server; ``mlflow``: the command given in ``x-embedded``; ``process``: the
service's own command; none: compose-only, skipped). :func:`up` starts them in dependency order and
waits on each one's compose health check; pid files under ``<state>/run`` let :func:`down` stop
exactly those processes later, from another shell.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from shared.ops.embedded import port_open, redis_answers, start_valkey, valkey_command
from shared.runtime.retry import wait_until
from shared.runtime.settings import REPO_ROOT, SERVICE_NAMES, MeshSettings

DEFAULT_COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
COMPOSE_ONLY = "compose-only"
LOOPBACK = "127.0.0.1"
MIN_HEALTH_WAIT_S = 60.0  # MLflow's first start (schema migrations) alone takes 10-20 s on 2 cores
STOP_GRACE_S = 20.0


@dataclass
class Component:
    name: str
    kind: str  # redis | mlflow | process | compose-only
    command: list[str]
    environment: dict[str, str]
    healthcheck: list[str] | None  # argv; None for redis (PING on `port`) and compose-only
    depends_on: list[str]  # launchable dependencies only (an embedded MLflow needs no PostgreSQL)
    port: int | None = None  # published host port == the loopback port here
    health_timeout: float = MIN_HEALTH_WAIT_S
    probe_timeout: float = 3.0
    mkdir: list[Path] = field(default_factory=list)


# --- compose interpolation -------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterpolationError(ValueError):
    pass


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose-style ``$VAR``, ``${VAR}``, ``${VAR:-d}``, ``${VAR-d}``, ``:?``/``?``, ``:+``/``+``, ``$$``.

    Hand-written rather than a regex so defaults may nest (``${A:-${B}}``), as compose allows.
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$" or i + 1 == len(text):
            out.append(text[i])
            i += 1
        elif text[i + 1] == "$":
            out.append("$")
            i += 2
        elif text[i + 1] == "{":
            depth, j = 1, i + 2
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            if depth:
                raise InterpolationError(f"unterminated ${{...}} in {text!r}")
            out.append(_expand(text[i + 2 : j - 1], env))
            i = j
        elif match := _NAME.match(text, i + 1):
            out.append(env.get(match.group(), ""))
            i = match.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _expand(body: str, env: Mapping[str, str]) -> str:
    match = _NAME.match(body)
    if not match:
        raise InterpolationError(f"bad substitution ${{{body}}}")
    name, rest = match.group(), body[match.end() :]
    value = env.get(name)
    if not rest:
        return value or ""
    op = next((o for o in (":-", ":?", ":+", "-", "?", "+") if rest.startswith(o)), None)
    if op is None:
        raise InterpolationError(f"bad substitution ${{{body}}}")
    # The colon forms treat an empty value like an unset one.
    missing = value is None or (op.startswith(":") and not value)
    arg, value = rest[len(op) :], value or ""
    if op.endswith("-"):
        return interpolate(arg, env) if missing else value
    if op.endswith("?"):
        if missing:
            raise InterpolationError(f"{name}: {interpolate(arg, env) or 'required variable is missing'}")
        return value
    return "" if missing else interpolate(arg, env)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):  # YAML true/false, as compose renders it
        return "true" if value else "false"
    return str(value)


# --- compose file -> plan ----------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(value: Any, default: float) -> float:
    if value is None:
        return default
    text = str(value).strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"bad compose duration {value!r}")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def _health_argv(test: Any) -> list[str] | None:
    if test is None:
        return None
    if isinstance(test, str):
        return ["sh", "-c", test]
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD":
        return [str(t) for t in test[1:]]
    if test[0] == "CMD-SHELL":
        return ["sh", "-c", " ".join(test[1:])]
    raise ValueError(f"healthcheck test must start with CMD, CMD-SHELL or NONE: {test!r}")


def _published_ports(spec: Mapping[str, Any], sub: Callable[[str], str]) -> dict[int, int]:
    """container port -> host port, from ``ports`` ("[ip:]host:container[/proto]" or long form)."""
    mapping: dict[int, int] = {}
    for entry in spec.get("ports") or []:
        if isinstance(entry, Mapping):
            if entry.get("published") is not None:
                mapping[int(entry["target"])] = int(sub(_scalar(entry["published"])))
            continue
        parts = sub(_scalar(entry)).split("/")[0].split(":")
        if len(parts) >= 2 and parts[-2].isdigit() and parts[-1].isdigit():
            mapping[int(parts[-1])] = int(parts[-2])
    return mapping


def _depends_on(spec: Mapping[str, Any]) -> list[str]:
    deps = spec.get("depends_on") or []
    return list(deps.keys() if isinstance(deps, Mapping) else deps)


def plan(compose: Mapping[str, Any], env: Mapping[str, str]) -> list[Component]:
    """What the launcher would run for ``compose`` under ``env``; pure (starts and creates nothing)."""
    services: Mapping[str, Mapping[str, Any]] = compose.get("services") or {}
    kinds = {
        name: (spec.get("x-embedded") or {}).get("kind", COMPOSE_ONLY) for name, spec in services.items()
    }
    published = {
        name: _published_ports(spec, functools.partial(interpolate, env=env))
        for name, spec in services.items()
    }
    # A URL host that is a compose service becomes loopback; its container port becomes the published
    # one, so e.g. the default redis://redis:6379/0 reaches the embedded server on MESH_REDIS_PORT.
    host_re = re.compile(
        r"(?P<pre>//|@)(?P<host>"
        + "|".join(map(re.escape, sorted(services, key=len, reverse=True)))
        + r")(?::(?P<port>\d+))?(?=[:/?#]|$)"
    )
    any_ip = re.compile(r"(?<![\d.])0\.0\.0\.0(?![\d.])")

    def relocate(match: re.Match[str]) -> str:
        port = match["port"]
        if port is not None:
            port = str(published[match["host"]].get(int(port), port))
        return f"{match['pre']}{LOOPBACK}" + (f":{port}" if port else "")

    def sub(value: Any) -> str:
        text = interpolate(_scalar(value), env)
        return any_ip.sub(LOOPBACK, host_re.sub(relocate, text) if services else text)

    def argv(value: Any) -> list[str]:
        return shlex.split(sub(value)) if isinstance(value, str) else [sub(v) for v in value or []]

    components: list[Component] = []
    for name, spec in services.items():
        kind, ext = kinds[name], spec.get("x-embedded") or {}
        if kind == COMPOSE_ONLY:
            components.append(Component(name, kind, [], {}, None, _depends_on(spec)))
            continue
        health = spec.get("healthcheck") or {}
        interval, retries = _seconds(health.get("interval"), 30.0), int(health.get("retries", 3))
        # A replacement command in x-embedded is self-contained: the container's environment and
        # health check (S3 endpoint, port 5000, ...) describe the container, not the replacement.
        source = ext if "command" in ext else {**spec, "healthcheck": health.get("test")}
        ports = published[name]
        container_argv = argv(spec.get("entrypoint")) + argv(spec.get("command"))
        component = Component(
            name=name,
            kind=kind,
            command=argv(ext["command"]) if "command" in ext else container_argv,
            environment=_environment(source.get("environment"), env, sub),
            healthcheck=[sub(a) for a in _health_argv(source.get("healthcheck")) or []] or None,
            depends_on=[d for d in _depends_on(spec) if kinds.get(d, COMPOSE_ONLY) != COMPOSE_ONLY],
            port=next(iter(ports.values()), None),
            health_timeout=max(
                _seconds(health.get("start_period"), 0.0) + interval * retries, MIN_HEALTH_WAIT_S
            ),
            probe_timeout=_seconds(health.get("timeout"), 30.0),
            mkdir=[Path(sub(d)) for d in ext.get("mkdir") or []],
        )
        if kind == "redis":
            # The embedded valkey-server stands in for the redis image, AOF on as in its compose command.
            component.port = component.port or int(env.get("MESH_REDIS_PORT") or 6390)
            data_dir = Path(env.get("MESH_STATE_DIR") or ".mesh") / "redis"
            component.command = valkey_command(component.port, data_dir, persistent=True)
            component.environment, component.healthcheck, component.mkdir = {}, None, [data_dir]
        elif kind not in ("mlflow", "process"):
            raise ValueError(f"service {name!r}: unknown x-embedded kind {kind!r}")
        components.append(component)
    return components


def _environment(raw: Any, env: Mapping[str, str], sub: Callable[[Any], str]) -> dict[str, str]:
    if raw is None:
        return {}
    pairs = raw.items() if isinstance(raw, Mapping) else (_split_assignment(item) for item in raw)
    out: dict[str, str] = {}
    for key, value in pairs:
        if value is not None:
            out[key] = sub(value)
        elif key in env:  # a bare name passes the launcher's own value through, as in compose
            out[key] = env[key]
    return out


def _split_assignment(item: str) -> tuple[str, str | None]:
    key, sep, value = item.partition("=")
    return key, value if sep else None


def start_order(components: Sequence[Component], services: Sequence[str] | None = None) -> list[Component]:
    """Launchable components in dependency order; ``services`` narrows to those plus their dependencies."""
    by_name = {c.name: c for c in components if c.kind != COMPOSE_ONLY}
    wanted = list(services) if services else list(by_name)
    if unknown := [s for s in wanted if s not in by_name]:
        raise ValueError(f"not launchable here: {', '.join(unknown)} (launchable: {', '.join(by_name)})")
    order: list[Component] = []
    state: dict[str, str] = {}

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if state.get(name) == "visiting":
            raise ValueError(f"dependency cycle: {' -> '.join((*trail, name))}")
        if name in state:
            return
        state[name] = "visiting"
        for dep in by_name[name].depends_on:
            visit(dep, (*trail, name))
        state[name] = "done"
        order.append(by_name[name])

    for name in wanted:
        visit(name, ())
    return order


def load_compose(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise ValueError(f"{path}: not a compose file (no services mapping)")
    return data


def launcher_env(settings: MeshSettings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment compose values are interpolated from and every process inherits."""
    env = dict(os.environ if base is None else base)
    state = settings.state_dir.resolve()  # absolute: processes run with cwd=REPO_ROOT
    # What the launcher runs comes from settings (normally read from this same environment).
    env.update(
        MESH_STATE_DIR=str(state),
        MESH_DATA_ROOT=str(settings.effective_data_root.resolve()),
        MESH_REDIS_PORT=str(settings.redis_port),
        MESH_MLFLOW_PORT=str(settings.mlflow_port),
        MESH_REDIS_URL=settings.effective_redis_url,
        MESH_MLFLOW_TRACKING_URI=settings.effective_mlflow_uri,
        **{f"MESH_{s.upper()}_PORT": str(settings.port_for(s)) for s in SERVICE_NAMES},
    )
    # No collector on loopback: spans go to a file unless the user chose otherwise.
    env.setdefault("MESH_OTEL_EXPORTER", "mlflow,file")
    env.setdefault("MESH_TRACE_FILE", str(state / "traces.jsonl"))
    if env["MESH_OTEL_EXPORTER"] != "otlp":
        env.setdefault("MESH_OTLP_ENDPOINT", "")
    return env


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


def external_kinds(settings: MeshSettings) -> set[str]:
    """A URL set by the user means a real server elsewhere: don't start the embedded one."""
    return {k for k, url in (("redis", settings.redis_url), ("mlflow", settings.mlflow_tracking_uri)) if url}


# --- processes ---------------------------------------------------------------------------------------


@dataclass
class _Record:
    """A pid file. ``started`` (kernel start time) tells our process from a later one reusing its pid."""

    pid: int
    started: str
    launched_at: float
    command: list[str]


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


def _alive(record: _Record) -> bool:
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


class _Paths:
    def __init__(self, settings: MeshSettings) -> None:
        self.state = settings.state_dir.resolve()
        self.run, self.logs = self.state / "run", self.state / "logs"

    def pid(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def records(self) -> dict[str, _Record]:
        found: dict[str, _Record] = {}
        for path in sorted(self.run.glob("*.pid")) if self.run.is_dir() else []:
            try:
                found[path.stem] = _Record(**json.loads(path.read_text()))
            except (ValueError, TypeError):
                path.unlink(missing_ok=True)  # unreadable: nothing we could safely signal anyway
        return found


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


def _probe(component: Component, env: Mapping[str, str]) -> bool:
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


class _StartFailed(Exception):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name


def _await_health(component: Component, running: Callable[[], bool], env: Mapping[str, str]) -> None:
    def check() -> bool:
        if not running():
            raise _StartFailed(component.name, "exited during start-up")
        return _probe(component, env)

    try:
        wait_until(check, timeout=component.health_timeout, what=f"{component.name} health check")
    except TimeoutError as exc:
        raise _StartFailed(component.name, str(exc)) from None


def _process_env(component: Component, env: Mapping[str, str]) -> dict[str, str]:
    merged = {**env, **component.environment, "PYTHONUNBUFFERED": "1"}  # logs reach the file as they happen
    venv_bin = str(Path(sys.executable).parent)
    if venv_bin not in merged.get("PATH", "").split(os.pathsep):
        merged["PATH"] = os.pathsep.join(p for p in (venv_bin, merged.get("PATH", "")) if p)
    return merged


def _launch(component: Component, env: Mapping[str, str], paths: _Paths, started: list[str]) -> _Record:
    """Start one component, record its pid (then it is ours to stop), and wait until it is healthy."""
    if component.port is not None and port_open(component.port):
        raise _StartFailed(
            component.name, f"port {component.port} is in use by a process this launcher did not start"
        )
    for directory in component.mkdir:
        directory.mkdir(parents=True, exist_ok=True)
    log_path, proc_env = paths.log(component.name), _process_env(component, env)
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} mesh up: {shlex.join(component.command)}\n")
    if component.kind == "redis":
        assert component.port is not None  # plan() gives redis a port, and its data dir as mkdir[0]
        try:
            proc = start_valkey(component.port, component.mkdir[0], log_path, persistent=True)
        except (OSError, TimeoutError) as exc:
            raise _StartFailed(component.name, str(exc)) from None
        argv = component.command
    else:
        try:
            argv = _resolve(component.command, proc_env)
        except FileNotFoundError as exc:
            raise _StartFailed(component.name, str(exc)) from None
        with log_path.open("ab") as log:
            # A session of its own = a process group of its own: down signals the children (MLflow's
            # uvicorn workers) with it, and a Ctrl-C in the launching shell doesn't reach it.
            proc = subprocess.Popen(
                argv, env=proc_env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
    record = _Record(proc.pid, _start_marker(proc.pid) or "", time.time(), argv)
    paths.pid(component.name).write_text(json.dumps(record.__dict__))
    started.append(component.name)
    _await_health(component, lambda: proc.poll() is None, proc_env)
    return record


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # gone between the check and the signal
        os.killpg(pgid, sig)


def _stop(name: str, record: _Record, paths: _Paths) -> bool:
    """Stop a verified process of ours and its process group; False if it would not die."""
    if _alive(record):
        _signal_group(record.pid, signal.SIGTERM)
        try:
            wait_until(
                lambda: not _alive(record) and not _group_alive(record.pid), timeout=STOP_GRACE_S, what=name
            )
        except TimeoutError:
            # Leader or stragglers are still in the group we created, so the group id is still ours.
            _signal_group(record.pid, signal.SIGKILL)
            try:
                wait_until(lambda: not _alive(record), timeout=5, what=name)
            except TimeoutError:
                return False  # keep the pid file: it still names a live process of ours
    paths.pid(name).unlink(missing_ok=True)
    return True


def _tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines, reading backwards in blocks so a large log isn't read whole."""
    with path.open("rb") as fh:
        end = fh.seek(0, os.SEEK_END)
        data, pos = b"", end
        while pos > 0 and data.count(b"\n") <= lines:
            step = min(64 * 1024, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
    return data.decode("utf-8", "replace").splitlines()[-lines:] if lines > 0 else []


def _url(component: Component, env: Mapping[str, str]) -> str:
    if component.kind == "redis":
        return env.get("MESH_REDIS_URL", "")
    if component.kind == "mlflow":
        return env.get("MESH_MLFLOW_TRACKING_URI", "")
    return f"http://{LOOPBACK}:{component.port}" if component.port else ""


# --- public API (the `mesh` CLI) ---------------------------------------------------------------------


def up(
    settings: MeshSettings,
    *,
    console: Console,
    compose_file: Path | None = None,
    services: list[str] | None = None,
) -> int:
    env = launcher_env(settings)
    env["MESH_REGISTRY_TOKEN"] = registry_token(settings)  # before interpolation: compose passes it on
    external = external_kinds(settings)
    try:
        order = start_order(plan(load_compose(compose_file or DEFAULT_COMPOSE_FILE), env), services)
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot plan the stack:[/red] {escape(str(exc))}")
        return 2
    paths = _Paths(settings)
    paths.run.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(parents=True, exist_ok=True)
    records = paths.records()
    started: list[str] = []
    try:
        for component in order:
            if component.kind in external:
                console.print(f"  {component.name}: external, {_url(component, env)}")
                continue
            record = records.get(component.name)
            if record is not None and _alive(record):
                # Idempotent: a live one of ours only has to be healthy (it may still be starting).
                _await_health(component, functools.partial(_alive, record), _process_env(component, env))
                console.print(f"  {component.name}: already running (pid {record.pid})")
                continue
            with console.status(f"starting {component.name}..."):
                record = _launch(component, env, paths, started)
            console.print(f"  [green]{component.name}[/green]: healthy (pid {record.pid})")
    except (_StartFailed, KeyboardInterrupt) as exc:
        console.print(f"[red]failed to start[/red] {escape(str(exc) or 'interrupted')}")
        log_path = paths.log(exc.name) if isinstance(exc, _StartFailed) else None
        if log_path is not None and log_path.exists():
            console.rule(f"last lines of {log_path}")
            for line in _tail(log_path, 30):
                console.out(line, highlight=False)
        fresh = paths.records()
        for started_name in reversed(started):  # only what this call started; older ones stay up
            if started_name in fresh:
                _stop(started_name, fresh[started_name], paths)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1

    table = Table(title="retrain-mesh (local)", show_header=False, box=None)
    for component in order:
        label = "MLflow UI" if component.kind == "mlflow" else component.name
        table.add_row(label, _url(component, env))
    table.add_row("logs", f"{paths.logs}  (mesh logs \\[service])")
    table.add_row("stop", "mesh down")
    console.print(table)
    return 0


def down(settings: MeshSettings, *, console: Console) -> int:
    paths = _Paths(settings)
    records = paths.records()
    if not records:
        console.print("nothing to stop")
        return 0
    # Reverse start order: services go before the Redis/MLflow they depend on.
    for name, record in sorted(records.items(), key=lambda item: item[1].launched_at, reverse=True):
        was_running = _alive(record)
        if not _stop(name, record, paths):
            console.print(f"  [red]{name}: still alive after SIGKILL[/red] (pid {record.pid})")
        else:
            console.print(f"  {name}: {'stopped' if was_running else 'was not running'} (pid {record.pid})")
    return 0


def status(settings: MeshSettings, *, console: Console) -> int:
    """0 when at least one component runs and every started one is healthy."""
    env, paths, external = launcher_env(settings), _Paths(settings), external_kinds(settings)
    records = paths.records()
    table = Table("name", "kind", "pid", "state", Column("url", overflow="fold"))  # URLs whole, wrapped
    healthy, running = True, 0
    for component in plan(load_compose(DEFAULT_COMPOSE_FILE), env):
        record = records.pop(component.name, None)
        if component.kind == COMPOSE_ONLY:
            state = "[dim]compose only[/dim]"
        elif component.kind in external:
            state = "external"
        elif record is None:
            state = "stopped"
        elif not _alive(record):
            state, healthy = "[red]stopped (pid file left: crashed?)[/red]", False
        else:
            running += 1
            ok = _probe(component, _process_env(component, env))
            healthy &= ok
            state = "[green]running, healthy[/green]" if ok else "[yellow]running, unhealthy[/yellow]"
        pid = str(record.pid) if record else ""
        url = _url(component, env) if component.kind != COMPOSE_ONLY else ""
        table.add_row(component.name, component.kind, pid, state, url)
    for name, record in records.items():  # started from an older compose file
        alive = _alive(record)
        running += alive
        table.add_row(name, "?", str(record.pid), "running (not in compose file)" if alive else "stopped", "")
    console.print(table)
    if not running:
        console.print("the local stack is not running (mesh up)")
    return 0 if healthy and running else 1


def logs(settings: MeshSettings, service: str | None, *, lines: int, console: Console) -> int:
    log_dir = _Paths(settings).logs
    files = [log_dir / f"{service}.log"] if service else sorted(log_dir.glob("*.log"))
    missing = [f for f in files if not f.exists()]
    if not files or missing:
        console.print(f"no log {'for ' + repr(service) if service else 'files'} in {log_dir}")
        return 1
    for path in files:
        if service is None:
            console.rule(path.stem)
        for line in _tail(path, lines):
            console.out(line, highlight=False)
    return 0
