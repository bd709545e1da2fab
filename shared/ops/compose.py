"""docker-compose.yml as the local stack's plan: what the launcher would run, computed and nothing started.

The compose file stays the single description of the stack. :func:`plan` turns it into
:class:`Component` s: values interpolated from the launcher's environment (:func:`launcher_env`),
container host names rewritten to 127.0.0.1 and container ports to the ports the processes listen on
here, and each service's ``x-embedded`` kind deciding what runs here (``redis``: the embedded
valkey-server; ``mlflow``: the command given in ``x-embedded``; ``process``: the service's own command;
none: compose-only, skipped). The compose file writes what a container knows of its network literally
(``MESH_REDIS_URL: redis://redis:6379/0``, ``MESH_INGEST_PORT: "8101"``), so a local process takes a
variable from the launcher's environment when that has it, and from the compose file otherwise.
Everything here is pure: it reads the file and the environment it is given, and starts or creates nothing.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shared.ops.embedded import valkey_command
from shared.runtime.settings import REPO_ROOT, SERVICE_NAMES, MeshSettings

DEFAULT_COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
COMPOSE_ONLY = "compose-only"
LOOPBACK = "127.0.0.1"
_LOOPBACK_HOSTS = (LOOPBACK, "localhost", "0.0.0.0")
MIN_HEALTH_WAIT_S = 60.0  # MLflow's first start (schema migrations) alone takes 10-20 s on 2 cores


@dataclass
class Component:
    name: str
    kind: str  # redis | mlflow | process | compose-only
    command: list[str]
    environment: dict[str, str]
    healthcheck: list[str] | None  # argv; None for redis (PING on `port`) and compose-only
    depends_on: list[str]  # launchable dependencies only (an embedded MLflow needs no PostgreSQL)
    port: int | None = None  # where it listens here: its published host port, else MESH_<NAME>_PORT
    health_timeout: float = MIN_HEALTH_WAIT_S
    probe_timeout: float = 3.0
    mkdir: list[Path] = field(default_factory=list)


# --- interpolation -----------------------------------------------------------------------------------

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


def _raw_environment(raw: Any) -> dict[str, Any]:
    """A service's ``environment`` (mapping or ``KEY=value`` list) as a mapping, values uninterpolated."""
    if raw is None:
        return {}
    return dict(raw.items() if isinstance(raw, Mapping) else (_split_assignment(i) for i in raw))


def _service_port(name: str, spec: Mapping[str, Any], kind: str, env: Mapping[str, str]) -> int | None:
    """A mesh service's port in its container: the MESH_<NAME>_PORT its compose environment sets."""
    value = _raw_environment(spec.get("environment")).get(f"MESH_{name.upper()}_PORT")
    if kind != "process" or name not in SERVICE_NAMES or value is None:
        return None
    return int(interpolate(_scalar(value), env))


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
    # container port -> the port a service listens on here: its published host port; for a mesh
    # service's own port, published or not (a scalable service), the launcher's MESH_<NAME>_PORT.
    own_port = {name: _service_port(name, spec, kinds[name], env) for name, spec in services.items()}
    local = {name: dict(ports) for name, ports in published.items()}
    for name, port in own_port.items():
        if port is not None:
            local[name].setdefault(port, int(env.get(f"MESH_{name.upper()}_PORT") or port))
    # A URL host that is a compose service becomes loopback, and its container port the port that service
    # listens on here: the default redis://redis:6379/0 reaches the embedded server on MESH_REDIS_PORT.
    # A loopback URL in a service's own settings (its health check) is the service itself: its port, too.
    host_re = re.compile(
        r"(?P<pre>//|@)(?P<host>"
        + "|".join(map(re.escape, sorted([*services, *_LOOPBACK_HOSTS], key=len, reverse=True)))
        + r")(?::(?P<port>\d+))?(?![\w.-])"
    )
    any_ip = re.compile(r"(?<![\d.])0\.0\.0\.0(?![\d.])")

    def relocate(match: re.Match[str], own: Mapping[int, int]) -> str:
        host, port = match["host"], match["port"]
        ports = local[host] if host in services else own
        if port is not None:
            port = str(ports.get(int(port), port))
        host = LOOPBACK if host in services else host
        return f"{match['pre']}{host}" + (f":{port}" if port else "")

    def substitute(value: Any, own: Mapping[int, int]) -> str:
        text = host_re.sub(functools.partial(relocate, own=own), interpolate(_scalar(value), env))
        return any_ip.sub(LOOPBACK, text)

    components: list[Component] = []
    for name, spec in services.items():
        kind, ext = kinds[name], spec.get("x-embedded") or {}
        if kind == COMPOSE_ONLY:
            components.append(Component(name, kind, [], {}, None, _depends_on(spec)))
            continue
        health = spec.get("healthcheck") or {}
        interval, retries = _seconds(health.get("interval"), 30.0), int(health.get("retries", 3))
        # A replacement command in x-embedded is self-contained and written for here: the container's
        # environment and health check (PostgreSQL, port 5000, ...) describe the container, not the
        # replacement, and its loopback ports are already this machine's.
        replaced = "command" in ext
        source = ext if replaced else {**spec, "healthcheck": health.get("test")}
        sub = functools.partial(substitute, own={} if replaced else local[name])

        command = [ext["command"]] if replaced else [spec.get("entrypoint"), spec.get("command")]
        component = Component(
            name=name,
            kind=kind,
            command=[arg for part in command for arg in _argv(part, sub)],
            environment=_environment(source.get("environment"), env, sub),
            healthcheck=[sub(a) for a in _health_argv(source.get("healthcheck")) or []] or None,
            depends_on=[d for d in _depends_on(spec) if kinds.get(d, COMPOSE_ONLY) != COMPOSE_ONLY],
            port=next(iter(published[name].values()), None),
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
        elif (port := own_port[name]) is not None:
            # A mesh service is told the port it listens on here (its container port is another).
            component.port = local[name][port]
            component.environment[f"MESH_{name.upper()}_PORT"] = str(component.port)
        elif kind not in ("mlflow", "process"):
            raise ValueError(f"service {name!r}: unknown x-embedded kind {kind!r}")
        components.append(component)
    return components


def _argv(value: Any, sub: Callable[[Any], str]) -> list[str]:
    return shlex.split(sub(value)) if isinstance(value, str) else [sub(v) for v in value or []]


def _environment(raw: Any, env: Mapping[str, str], sub: Callable[[Any], str]) -> dict[str, str]:
    """A local process's environment: the launcher's value of each variable the compose file sets, when it
    has one (MESH_REDIS_URL, the ports, the operator's MESH_LOG_LEVEL, ...), else the compose value with
    its container addresses relocated. A bare name passes the launcher's value through, as in compose."""
    out: dict[str, str] = {}
    for key, value in _raw_environment(raw).items():
        if key in env:
            out[key] = env[key]
        elif value is not None:
            out[key] = sub(value)
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
    # BentoML's home (serving's bento store) under the state dir, not the user's ~/bentoml.
    env.setdefault("BENTOML_HOME", str(state / "bentoml"))
    # No collector on loopback: spans go to a file unless the user chose otherwise.
    env.setdefault("MESH_OTEL_EXPORTER", "mlflow,file")
    env.setdefault("MESH_TRACE_FILE", str(state / "traces.jsonl"))
    if env["MESH_OTEL_EXPORTER"] != "otlp":
        env.setdefault("MESH_OTLP_ENDPOINT", "")
    return env


def external_kinds(settings: MeshSettings) -> set[str]:
    """A URL set by the user means a real server elsewhere: don't start the embedded one."""
    return {k for k, url in (("redis", settings.redis_url), ("mlflow", settings.mlflow_tracking_uri)) if url}


def component_url(component: Component, env: Mapping[str, str]) -> str:
    """Where a planned component answers, under the launcher environment ``env``; "" if nowhere."""
    if component.kind == "redis":
        return env.get("MESH_REDIS_URL", "")
    if component.kind == "mlflow":
        return env.get("MESH_MLFLOW_TRACKING_URI", "")
    return f"http://{LOOPBACK}:{component.port}" if component.port else ""
