"""Serving benchmark: the mesh's BentoML service against bare uvicorn, same model, same request, same run.

Starts the stack (launcher, embedded defaults, free ports, a scratch state directory), uploads a demo
batch so a champion is trained, gated and served, then measures from load generators in their own
processes:

- **throughput**: ``POST /predict`` closed-loop at ``--connections`` on the stack's BentoML service (as
  shipped: adaptive batching on), on the same service with batching off (``MESH_SERVING_BATCH_MAX_RECORDS
  =1``, a second ``mesh run serving`` as the launcher runs it) and on ``bench/bare_serving.py`` (the same
  champion, validation and response on bare Starlette + uvicorn), in alternating rounds. Goal: BentoML
  >= 0.9x bare in requests/s, p99 <= 1.2x.
- **adaptive batching**: batching on vs off at concurrency 64 (goal >= 2x requests/s) and at concurrency 1
  (goal: p50 <= 1.1x, batching must not cost a lone client).
- **two workers**: the same service with ``MESH_SERVING_WORKERS=2``, throughput at ``--connections``.
- **hot swap under load**: paced (open-loop) load at half of what the stack's service sustained, and a
  promotion of another version mid-run with the registry's command: failed requests (goal 0), p99 while
  the new version loads (until every worker answers with it) vs steady (goal <= 2x), and from the
  promotion to the first answer by it; on two workers, then on the stack's one.

The figures that matter are ratios measured here and now, never against old numbers.

Usage: ``python -m bench.serving [--connections 32 --duration 8 --rounds 2]``; ``make bench`` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from bench.paced_load import Request, failures, paced_load, stretch, window
from bench.report import write_result
from shared import events
from shared.ops import launcher
from shared.ops.compose import DEFAULT_COMPOSE_FILE, launcher_env, load_compose, plan
from shared.ops.demo import Demo
from shared.ops.demo_data import EXAMPLE_RECORD
from shared.ops.embedded import free_port, port_open
from shared.ops.processes import process_env, registry_token
from shared.runtime.retry import wait_until
from shared.runtime.settings import REPO_ROOT, SERVICE_NAMES, MeshSettings

SERVICES = ["ingest", "features", "training", "registry", "serving"]
SWAP_CONNECTIONS = 16
STEADY_S = 4.0  # paced load before the promotion, and after the new version answers


def load(port: int, model: str, connections: int, args: argparse.Namespace) -> dict[str, Any]:
    body = json.dumps({"model": model, "features": EXAMPLE_RECORD})
    out = subprocess.run(
        [
            sys.executable, "-m", "bench.loadgen", "--port", str(port), "--path", "/predict",
            "--body", body, "--connections", str(connections),
            "--duration", str(args.duration), "--warmup", str(args.warmup),
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def started(
    proc: subprocess.Popen[bytes], ready: str, log_path: Path, what: str, timeout: float = 180
) -> None:
    """Wait until ``ready`` (a URL) answers 200, failing early if ``proc`` exits."""

    def answering() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; see {log_path}")
        try:
            return httpx.get(ready, timeout=30).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answering, timeout=timeout, what=what)


def start_bare_server(
    settings: MeshSettings, model: str, log_path: Path
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = launcher_env(settings)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bare_serving", "--port", str(port), "--model", model],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    wait_until(lambda: port_open(port) or proc.poll() is not None, timeout=120, what="the bare server")
    if proc.poll() is not None:
        raise RuntimeError(f"the bare server exited with {proc.returncode}; see {log_path}")
    return proc, port


def start_serving(
    settings: MeshSettings, overrides: dict[str, str], log_path: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """A second ``mesh run serving`` of the stack, exactly as the launcher runs it (compose's environment)
    but for ``overrides``, on a port of its own."""
    env = launcher_env(settings)
    [component] = [c for c in plan(load_compose(DEFAULT_COMPOSE_FILE), env) if c.name == "serving"]
    port = free_port()
    run_env = {**process_env(component, env), **overrides, "MESH_SERVING_PORT": str(port)}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            component.command, cwd=REPO_ROOT, env=run_env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    started(proc, f"http://127.0.0.1:{port}/readyz", log_path, "the second serving")
    return proc, port


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # each was started in a session of its own: BentoML's workers too
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "requests_per_s": statistics.median(r["requests_per_s"] for r in runs),
        "p50_ms": statistics.median(r["latency_ms"]["p50"] for r in runs),
        "p99_ms": statistics.median(r["latency_ms"]["p99"] for r in runs),
        "failed": sum(r["requests"] - r["ok"] + r["connection_errors"] for r in runs),
        "rounds": runs,
    }


def alternating(
    servers: dict[str, int], model: str, connections: int, args: argparse.Namespace, console: Console
) -> dict[str, dict[str, Any]]:
    """Each server loaded closed-loop at ``connections``, in alternating rounds; medians per server."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    for round_ in range(args.rounds):
        for name, port in servers.items():
            console.print(f"concurrency {connections}, round {round_ + 1}/{args.rounds}: {name} ...")
            runs[name].append(load(port, model, connections, args))
    return {name: summary(r) for name, r in runs.items()}


def second_version(demo: Demo, model: str) -> str | None:
    """Upload more data so that a second version is trained and gated. If the gate promotes it, the
    version it replaced (to swap back to); None if it rejected it: there is no other version then."""
    promoted_before = demo.mesh.count(events.MODEL_PROMOTED)
    rejected_before = demo.mesh.count(events.MODEL_REJECTED)
    demo.upload("bench-more", rows=8000, seed=3)
    demo.mesh.wait_for(
        "the gate's verdict on a second version",
        lambda: (
            demo.mesh.count(events.MODEL_PROMOTED) > promoted_before
            or demo.mesh.count(events.MODEL_REJECTED) > rejected_before
            or None
        ),
    )
    if demo.mesh.count(events.MODEL_PROMOTED) == promoted_before:
        return None
    newest = demo.mesh.last_event(events.MODEL_PROMOTED).payload
    demo.mesh.wait_for_version(newest.version, model)
    return newest.previous_version


def serves(port: int, model: str, version: str, times: int = 8) -> bool:
    """``times`` answers in a row from the server on ``port`` say ``version`` of ``model`` is served (a
    multi-worker server answers from any of its workers)."""
    for _ in range(times):
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/models/{model}", timeout=5)
        except httpx.HTTPError:
            return False
        if response.status_code != 200 or response.json().get("version") != version:
            return False
    return True


def hot_swap(
    settings: MeshSettings, demo: Demo, port: int, model: str, target: str, rate: float, out: Path
) -> dict[str, Any]:
    """Paced load at ``rate`` on the server on ``port``; mid-run the registry makes ``target`` the
    champion. The swap window runs from the promotion until every worker answers with ``target``."""
    body = json.dumps({"model": model, "features": EXAMPLE_RECORD})
    registry = f"http://127.0.0.1:{settings.registry_port}"
    auth = {"authorization": f"Bearer {registry_token(settings)}"}
    with paced_load(port, rate, out, body=body, connections=SWAP_CONNECTIONS) as paced:
        paced.wait_answered(int(rate * STEADY_S), "a steady stretch before the promotion")
        response = httpx.post(
            f"{registry}/models/{model}/promote", json={"version": target}, headers=auth, timeout=30
        )
        response.raise_for_status()
        wait_until(lambda: serves(port, model, target), timeout=120, what=f"version {target} served")
        paced.wait_answered(int(rate * STEADY_S), "a steady stretch after the swap")
        requests = paced.stop()
    promotion = next(
        e for e in reversed(demo.mesh.events(events.MODEL_PROMOTED)) if e.payload.version == target
    )
    promoted_at = promotion.occurred_at.timestamp()
    new = [r for r in requests if r.version == f"{model}/{target}"]
    first_new = min(r.done for r in new) if new else float("inf")
    old_after = [
        r.done for r in requests if r.due >= promoted_at and r.ok and r.version != f"{model}/{target}"
    ]
    swapped = max([first_new, *old_after])  # every worker answers with the new version from here on
    steady: list[Request] = window(requests, 0, promoted_at)
    swapping = window(requests, promoted_at, swapped)
    steady_p99, swap_p99 = stretch(steady).get("p99_ms"), stretch(swapping).get("p99_ms")
    return {
        "rate": rate,
        "connections": SWAP_CONNECTIONS,
        "to_version": target,
        "workers": len({r.worker for r in requests if r.worker}),
        "requests": len(requests),
        "failed": sum(not r.ok for r in requests),
        "failures": failures(requests),
        "steady": stretch(steady),
        "swap": stretch(swapping),
        "after": stretch(window(requests, swapped, float("inf"))),
        "promotion_to_first_new_answer_s": round(first_new - promoted_at, 2) if new else None,
        "promotion_to_last_old_answer_s": round(swapped - promoted_at, 2) if new else None,
        "p99_ratio_swap_vs_steady": round(swap_p99 / steady_p99, 2) if swap_p99 and steady_p99 else None,
        "goal": {"failed": 0, "p99_ratio": 2.0},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per round")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring, per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per server")
    args = parser.parse_args()
    console = Console(stderr=True)

    state = Path(tempfile.mkdtemp(prefix="mesh-bench-"))
    ports: dict[str, Any] = {f"{name}_port": free_port() for name in ("redis", "mlflow", *SERVICE_NAMES)}
    settings = MeshSettings(state_dir=state, **ports)
    if launcher.up(settings, console=console, services=SERVICES) != 0:
        raise SystemExit("the stack did not start")
    bare: subprocess.Popen[bytes] | None = None
    unbatched: subprocess.Popen[bytes] | None = None
    two_workers: subprocess.Popen[bytes] | None = None
    try:
        demo = Demo(settings, console)
        demo.upload("bench", rows=4000, seed=2)
        model = wait_until(demo.mesh.served_model, timeout=300, what="a champion to serve")
        name = model["name"]
        bare, bare_port = start_bare_server(settings, name, state / "bare-serving.log")
        unbatched, unbatched_port = start_serving(
            settings, {"MESH_SERVING_BATCH_MAX_RECORDS": "1"}, state / "serving-unbatched.log"
        )
        servers = {
            "bare_uvicorn": bare_port,
            "bentoml": settings.serving_port,
            "bentoml_unbatched": unbatched_port,
        }
        throughput = alternating(servers, name, args.connections, args, console)
        stop(bare)
        bentoml_only = {k: servers[k] for k in ("bentoml", "bentoml_unbatched")}
        batching = {c: alternating(bentoml_only, name, c, args, console) for c in (64, 1)}
        stop(unbatched)
        two_workers, two_workers_port = start_serving(
            settings, {"MESH_SERVING_WORKERS": "2"}, state / "serving-two-workers.log"
        )
        throughput |= alternating(
            {"bentoml_2_workers": two_workers_port}, name, args.connections, args, console
        )

        skipped = {"skipped": "the gate rejected the second version: no other to swap to"}
        swap: dict[str, Any] = skipped
        swap_two_workers: dict[str, Any] = skipped
        newest = model["version"]
        target = second_version(demo, name)
        if target is not None:
            newest = demo.mesh.served_model(name)["version"]  # type: ignore[index]
            rate = round(throughput["bentoml"]["requests_per_s"] / 2)
            console.print(f"hot swap to version {target} on two workers at {rate} requests/s ...")
            swap_two_workers = hot_swap(
                settings, demo, two_workers_port, name, target, rate, state / "swap2.json"
            )
            # The stack's own serving swapped too (it follows every promotion), idle: noted, not measured.
            swap_two_workers["beside"] = "the stack's one-worker serving, idle, swapping at the same time"
        stop(two_workers)
        if target is not None:
            console.print(f"hot swap to version {newest} on one worker at {rate} requests/s ...")
            swap = hot_swap(settings, demo, settings.serving_port, name, newest, rate, state / "swap.json")
    finally:
        stop(bare)
        stop(unbatched)
        stop(two_workers)
        launcher.down(settings, console=console)

    def ratio(a: float, b: float) -> float:
        return round(a / max(b, 1e-9), 3)

    bento, bare_figures = throughput["bentoml"], throughput["bare_uvicorn"]
    on_64, off_64 = batching[64]["bentoml"], batching[64]["bentoml_unbatched"]
    on_1, off_1 = batching[1]["bentoml"], batching[1]["bentoml_unbatched"]
    result: dict[str, Any] = {
        "what": "POST /predict, one JSON record, closed loop; BentoML service vs bare uvicorn, same model",
        "load": {k: getattr(args, k) for k in ("connections", "duration", "warmup", "rounds")},
        "model": {k: model[k] for k in ("name", "version")},
        "servers": throughput,
        "ratio_requests_per_s": ratio(bento["requests_per_s"], bare_figures["requests_per_s"]),
        "ratio_p99": ratio(bento["p99_ms"], bare_figures["p99_ms"]),
        "ratio_unbatched_requests_per_s": ratio(
            throughput["bentoml_unbatched"]["requests_per_s"], bare_figures["requests_per_s"]
        ),
        "goal_ratio": 0.9,
        "goal_p99_ratio": 1.2,
        "batching": {
            "by_concurrency": {str(c): figures for c, figures in batching.items()},
            "ratio_requests_per_s_at_64": ratio(on_64["requests_per_s"], off_64["requests_per_s"]),
            "ratio_p50_at_1": ratio(on_1["p50_ms"], off_1["p50_ms"]),
            "goal": {"ratio_requests_per_s_at_64": 2.0, "ratio_p50_at_1": 1.1},
        },
        "hot_swap": swap,
        "hot_swap_two_workers": swap_two_workers,
        "ratio_two_workers_requests_per_s": ratio(
            throughput["bentoml_2_workers"]["requests_per_s"], bento["requests_per_s"]
        ),
    }
    path = write_result("serving", result)
    for server, s in throughput.items():
        console.print(
            f"{server:>17}: {s['requests_per_s']:8.1f} req/s  p50 {s['p50_ms']:6.1f} ms  "
            f"p99 {s['p99_ms']:6.1f} ms  failed {s['failed']}"
        )
    figures = result["batching"]
    console.print(
        f"ratio BentoML / bare: {result['ratio_requests_per_s']} req/s (goal >= 0.9), p99 "
        f"{result['ratio_p99']} (goal <= 1.2); batching at 64: {figures['ratio_requests_per_s_at_64']}x, "
        f"p50 at 1: {figures['ratio_p50_at_1']}x"
    )
    console.print(f"hot swap: {json.dumps({k: swap.get(k) for k in ('failed', 'p99_ratio_swap_vs_steady')})}")
    console.print(f"-> {path}")


if __name__ == "__main__":
    main()
