"""Footprint benchmark: the whole local stack idle, as ``make up`` starts it, against MLflow's server alone
at its defaults, in the same run.

Starts the stack with the launcher (embedded valkey, MLflow, every service; free ports, a scratch state
directory), lets it settle, then counts the processes of every component (each with its children: the
BentoML arbiter's workers, MLflow's server workers), their memory and the CPU they use over
``--seconds`` with nothing flowing. The baseline is ``mlflow server`` as the stack runs it but with its
defaults (the job runner on), measured the same way: what one dependency costs left untuned.

Memory is given as RSS (what the issue's goal counts: shared pages counted in every process) and PSS
(shared pages divided among the processes that share them: what the processes really hold together).
CPU is the share of one core. Goals: <= 10 processes, <= 1.5 GB RSS, <= 2% CPU.

Usage: ``python -m bench.footprint [--settle 15 --seconds 20]``; ``make bench`` runs it.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console

from bench.report import write_result
from bench.serving import started, stop
from shared.ops import launcher
from shared.ops.compose import DEFAULT_COMPOSE_FILE, launcher_env, load_compose, plan
from shared.ops.embedded import free_port
from shared.ops.processes import StateFiles, process_env
from shared.runtime.settings import REPO_ROOT, SERVICE_NAMES, MeshSettings

GOALS = {"processes": 10, "rss_mb": 1536, "cpu_percent_of_one_core": 2.0}
MB = 1024 * 1024


def family(roots: Iterable[int]) -> list[psutil.Process]:
    """The processes ``roots`` and all their descendants, each once."""
    found: dict[int, psutil.Process] = {}
    for pid in roots:
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                found[process.pid] = process
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def _cpu_seconds(processes: Iterable[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[process.pid] = times.user + times.system
    return seconds


def measure(roots: list[int], seconds: float) -> dict[str, Any]:
    """Processes, memory and CPU (over ``seconds``) of ``roots`` and their descendants."""
    before = _cpu_seconds(family(roots))
    started = time.monotonic()
    time.sleep(seconds)
    processes = family(roots)
    elapsed = time.monotonic() - started
    after = _cpu_seconds(processes)
    used = sum(after[pid] - before.get(pid, 0.0) for pid in after)
    rss = pss = 0
    by_command: dict[str, dict[str, float]] = {}
    for process in processes:
        try:
            memory = process.memory_full_info()
            command = " ".join(process.cmdline()[:4])[:90]
        except psutil.NoSuchProcess:
            continue
        rss += memory.rss
        pss += memory.pss
        entry = by_command.setdefault(
            command, {"processes": 0, "rss_mb": 0.0, "cpu_percent_of_one_core": 0.0}
        )
        entry["processes"] += 1
        entry["rss_mb"] = round(entry["rss_mb"] + memory.rss / MB, 1)
        cpu = 100 * (after.get(process.pid, 0.0) - before.get(process.pid, 0.0)) / elapsed
        entry["cpu_percent_of_one_core"] = round(entry["cpu_percent_of_one_core"] + cpu, 2)
    return {
        "processes": len(processes),
        "rss_mb": round(rss / MB, 1),
        "pss_mb": round(pss / MB, 1),
        "cpu_percent_of_one_core": round(100 * used / elapsed, 2),
        "seconds": round(elapsed, 1),
        "by_command": by_command,
    }


def stack_roots(settings: MeshSettings) -> list[int]:
    return [record.pid for record in StateFiles(settings).records().values()]


def mlflow_at_defaults(settings: MeshSettings, log: Path) -> subprocess.Popen[bytes]:
    """``mlflow server`` with the stack's options, but with MLflow's defaults: its job runner on, and the
    command's own parent process (the stack runs it as one process, shared.ops.mlflow_server)."""
    env = launcher_env(settings)
    [component] = [c for c in plan(load_compose(DEFAULT_COMPOSE_FILE), env) if c.kind == "mlflow"]
    wrapper = ["python", "-m", "shared.ops.mlflow_server"]
    assert component.command[:3] == wrapper, component.command
    run_env = process_env(component, env)
    run_env.pop("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", None)
    for directory in component.mkdir:
        directory.mkdir(parents=True, exist_ok=True)
    command = ["mlflow", "server", *component.command[len(wrapper) :]]
    with log.open("ab") as out:
        return subprocess.Popen(
            command, cwd=REPO_ROOT, env=run_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def scratch_settings(prefix: str) -> MeshSettings:
    ports: dict[str, Any] = {f"{name}_port": free_port() for name in ("redis", "mlflow", *SERVICE_NAMES)}
    return MeshSettings(state_dir=Path(tempfile.mkdtemp(prefix=prefix)), **ports)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--settle", type=float, default=15.0, help="seconds idle before measuring")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds CPU is measured over")
    args = parser.parse_args()
    console = Console(stderr=True)

    settings = scratch_settings("mesh-footprint-")
    if launcher.up(settings, console=console) != 0:
        raise SystemExit("the stack did not start")
    try:
        console.print(f"stack up; idle for {args.settle:g} s, then measured over {args.seconds:g} s ...")
        time.sleep(args.settle)
        stack = measure(stack_roots(settings), args.seconds)
    finally:
        launcher.down(settings, console=console)

    baseline_settings = scratch_settings("mesh-footprint-mlflow-")
    log = baseline_settings.state_dir / "mlflow.log"
    server = mlflow_at_defaults(baseline_settings, log)
    try:
        health = f"http://127.0.0.1:{baseline_settings.mlflow_port}/health"
        started(server, health, log, "MLflow at its defaults", timeout=120)
        console.print(f"MLflow at its defaults up; idle for {args.settle:g} s, then measured ...")
        time.sleep(args.settle)
        mlflow_defaults = measure([server.pid], args.seconds)
    finally:
        stop(server)

    met = {key: stack[key] <= goal for key, goal in GOALS.items()}
    result = {
        "what": "the local stack idle (make up: embedded valkey, MLflow, every service) vs MLflow's server "
        "alone at its defaults",
        "stack": stack,
        "mlflow_server_defaults": mlflow_defaults,
        "goals": GOALS,
        "met": met,
        "timing": {"settle_s": args.settle, "measured_s": args.seconds},
    }
    path = write_result("footprint", result)
    for name, figures in (("stack", stack), ("mlflow defaults", mlflow_defaults)):
        console.print(
            f"{name:>16}: {figures['processes']} processes, {figures['rss_mb']:.0f} MB RSS "
            f"({figures['pss_mb']:.0f} MB PSS), {figures['cpu_percent_of_one_core']:.2f}% of a core"
        )
    console.print(f"goals met: {met}  ->  {path}")


if __name__ == "__main__":
    main()
