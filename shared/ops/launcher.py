"""The local stack launcher as the operator sees it: ``mesh up``, ``down``, ``status`` and ``logs`` on a
rich console, over docker-compose.yml's plan (``shared.ops.compose``) and the processes it runs
(``shared.ops.processes``). Each command returns its exit code.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.table import Column, Table

from shared.ops import processes
from shared.ops.compose import (
    DEFAULT_COMPOSE_FILE,
    Component,
    component_url,
    launcher_env,
    load_compose,
    plan,
    start_order,
)
from shared.ops.processes import StartFailed, State, StateFiles, Stopped, registry_token
from shared.runtime.settings import MeshSettings

_STATE_MARKUP = {
    State.COMPOSE_ONLY: "[dim]compose only[/dim]",
    State.EXTERNAL: "external",
    State.STOPPED: "stopped",
    State.CRASHED: "[red]stopped (pid file left: crashed?)[/red]",
    State.HEALTHY: "[green]running, healthy[/green]",
    State.UNHEALTHY: "[yellow]running, unhealthy[/yellow]",
    State.NOT_PLANNED: "running (not in compose file)",
}
_RUNNING = {State.HEALTHY, State.UNHEALTHY, State.NOT_PLANNED}
_FAILING = {State.CRASHED, State.UNHEALTHY}
_FAILURE_LOG_LINES = 30


class _ConsoleProgress:
    """:class:`processes.StartProgress` as lines on the console, a spinner while one starts."""

    def __init__(self, console: Console, env: dict[str, str]) -> None:
        self.console, self.env = console, env

    def external(self, component: Component) -> None:
        self.console.print(f"  {component.name}: external, {component_url(component, self.env)}")

    def already_running(self, component: Component, pid: int) -> None:
        self.console.print(f"  {component.name}: already running (pid {pid})")

    def starting(self, component: Component) -> Status:
        return self.console.status(f"starting {component.name}...")

    def healthy(self, component: Component, pid: int) -> None:
        self.console.print(f"  [green]{component.name}[/green]: healthy (pid {pid})")

    def failed(self, error: StartFailed | KeyboardInterrupt) -> None:
        self.console.print(f"[red]failed to start[/red] {escape(str(error) or 'interrupted')}")
        if isinstance(error, StartFailed) and error.log.exists():
            self.console.rule(f"last lines of {error.log}")
            for line in processes.tail(error.log, _FAILURE_LOG_LINES):
                self.console.out(line, highlight=False)


def up(
    settings: MeshSettings,
    *,
    console: Console,
    compose_file: Path | None = None,
    services: list[str] | None = None,
) -> int:
    """Start the stack (or ``services`` and their dependencies), each healthy before the next."""
    env = launcher_env(settings)
    env["MESH_REGISTRY_TOKEN"] = registry_token(settings)  # before interpolation: compose passes it on
    try:
        order = start_order(plan(load_compose(compose_file or DEFAULT_COMPOSE_FILE), env), services)
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot plan the stack:[/red] {escape(str(exc))}")
        return 2
    try:
        processes.start(settings, order, env, _ConsoleProgress(console, env))
    except StartFailed:
        return 1
    except KeyboardInterrupt:
        return 130

    table = Table(title="retrain-mesh (local)", show_header=False, box=None)
    for component in order:
        label = "MLflow UI" if component.kind == "mlflow" else component.name
        table.add_row(label, component_url(component, env))
    table.add_row("logs", f"{StateFiles(settings).logs}  (mesh logs \\[service])")
    table.add_row("stop", "mesh down")
    console.print(table)
    return 0


def down(settings: MeshSettings, *, console: Console) -> int:
    """Stop exactly the processes ``up`` started."""

    def report(done: Stopped) -> None:
        if not done.stopped:
            console.print(f"  [red]{done.name}: still alive after SIGKILL[/red] (pid {done.pid})")
        else:
            outcome = "stopped" if done.was_running else "was not running"
            console.print(f"  {done.name}: {outcome} (pid {done.pid})")

    if not processes.stop_all(settings, report):
        console.print("nothing to stop")
    return 0


def status(settings: MeshSettings, *, console: Console) -> int:
    """0 when at least one component runs and every started one is healthy."""
    found = processes.survey(settings)
    table = Table("name", "kind", "pid", "state", Column("url", overflow="fold"))  # URLs whole, wrapped
    for component in found:
        pid = str(component.pid) if component.pid is not None else ""
        table.add_row(component.name, component.kind, pid, _STATE_MARKUP[component.state], component.url)
    console.print(table)
    running = any(c.state in _RUNNING for c in found)
    if not running:
        console.print("the local stack is not running (mesh up)")
    return 0 if running and not any(c.state in _FAILING for c in found) else 1


def log_ends(settings: MeshSettings, service: str | None) -> dict[Path, int]:
    """Where each of ``service``'s logs (or every log) has its last whole line now."""
    return {
        path: processes.whole_lines_end(path)
        for path in processes.log_files(settings, service)
        if path.exists()
    }


def follow_logs(
    settings: MeshSettings,
    service: str | None,
    *,
    console: Console,
    since: dict[Path, int] | None = None,
    poll_s: float = 0.25,
) -> None:
    """Print lines as they are appended to ``service``'s log (or every log, each line prefixed with its
    component) after ``since`` (default: now), until interrupted. A log that is truncated or replaced (a
    restart) is read from its start."""
    offsets = dict(since) if since is not None else log_ends(settings, service)
    pending: dict[Path, bytes] = {}
    while True:
        for path in processes.log_files(settings, service):
            if not path.exists():
                continue
            size = path.stat().st_size
            offset = offsets.get(path, 0)
            if size < offset:
                offset = 0
            if size == offset:
                continue
            with path.open("rb") as handle:
                handle.seek(offset)
                data = pending.pop(path, b"") + handle.read(size - offset)
            offsets[path] = size
            complete, _, partial = data.rpartition(b"\n")
            if partial:
                pending[path] = partial  # half a line: printed once the rest is written
            for line in complete.decode("utf-8", "replace").splitlines() if complete else []:
                console.out(f"{path.stem} | {line}" if service is None else line, highlight=False)
        time.sleep(poll_s)


def logs(
    settings: MeshSettings,
    service: str | None,
    *,
    lines: int,
    console: Console,
    upto: dict[Path, int] | None = None,
) -> int:
    """The last ``lines`` lines of ``service``'s log, or of every log under a rule each (each up to its
    offset in ``upto``, where a follower then goes on)."""
    files = processes.log_files(settings, service)
    if not files or any(not f.exists() for f in files):
        log_dir = StateFiles(settings).logs
        console.print(f"no log {'for ' + repr(service) if service else 'files'} in {log_dir}")
        return 1
    for path in files:
        if service is None:
            console.rule(path.stem)
        for line in processes.tail(path, lines, (upto or {}).get(path)):
            console.out(line, highlight=False)
    return 0
