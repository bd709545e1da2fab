"""Serving benchmark: the mesh's BentoML service against bare uvicorn, same model, same request, same run.

Starts the stack (launcher, embedded defaults, free ports, a scratch state directory), uploads a demo
batch so a champion is trained, gated and served, then loads ``POST /predict`` on the BentoML service
and on ``bench/bare_serving.py`` (the same champion, validation and response, on bare Starlette +
uvicorn) in alternating rounds from a load generator in its own process. The figure that matters is
the ratio of requests per second, BentoML over bare, measured here and now, never against old numbers.

Usage: ``python -m bench.serving [--connections 32 --duration 8 --rounds 2]``; ``make bench`` runs it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.report import write_result
from shared.ops import launcher
from shared.ops.compose import launcher_env
from shared.ops.demo import Demo
from shared.ops.demo_data import EXAMPLE_RECORD
from shared.ops.embedded import free_port, port_open
from shared.runtime.retry import wait_until
from shared.runtime.settings import REPO_ROOT, SERVICE_NAMES, MeshSettings

RECORD = EXAMPLE_RECORD
SERVICES = ["ingest", "features", "training", "registry", "serving"]


def load(port: int, model: str, args: argparse.Namespace) -> dict[str, Any]:
    body = json.dumps({"model": model, "features": RECORD})
    out = subprocess.run(
        [
            sys.executable, "-m", "bench.loadgen", "--port", str(port), "--path", "/predict",
            "--body", body, "--connections", str(args.connections),
            "--duration", str(args.duration), "--warmup", str(args.warmup),
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def start_bare_server(
    settings: MeshSettings, model: str, log_path: Path
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = launcher_env(settings)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bare_serving", "--port", str(port), "--model", model],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    wait_until(lambda: port_open(port) or proc.poll() is not None, timeout=120, what="the bare server")
    if proc.poll() is not None:
        raise RuntimeError(f"the bare server exited with {proc.returncode}; see {log_path}")
    return proc, port


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "requests_per_s": statistics.median(r["requests_per_s"] for r in runs),
        "p50_ms": statistics.median(r["latency_ms"]["p50"] for r in runs),
        "p99_ms": statistics.median(r["latency_ms"]["p99"] for r in runs),
        "failed": sum(r["requests"] - r["ok"] + r["connection_errors"] for r in runs),
        "rounds": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    try:
        demo = Demo(settings, console)
        demo.upload("bench", rows=4000, seed=2)
        model = wait_until(demo.mesh.served_model, timeout=300, what="a champion to serve")
        bare, bare_port = start_bare_server(settings, model["name"], state / "bare-serving.log")

        runs: dict[str, list[dict[str, Any]]] = {"bentoml": [], "bare_uvicorn": []}
        for round_ in range(args.rounds):
            for server, port in (("bare_uvicorn", bare_port), ("bentoml", settings.serving_port)):
                console.print(f"round {round_ + 1}/{args.rounds}: {server} ...")
                runs[server].append(load(port, model["name"], args))
    finally:
        if bare is not None:
            bare.terminate()
            bare.wait(timeout=30)
        launcher.down(settings, console=console)

    servers = {name: summary(r) for name, r in runs.items()}
    ratio = servers["bentoml"]["requests_per_s"] / max(servers["bare_uvicorn"]["requests_per_s"], 1e-9)
    result = {
        "what": "POST /predict, one JSON record, closed loop; BentoML service vs bare uvicorn, same model",
        "load": {k: getattr(args, k) for k in ("connections", "duration", "warmup", "rounds")},
        "model": {k: model[k] for k in ("name", "version")} if model else None,
        "servers": servers,
        "ratio_requests_per_s": round(ratio, 3),
        "goal_ratio": 0.9,
    }
    path = write_result("serving", result)
    for name, s in servers.items():
        console.print(
            f"{name:>13}: {s['requests_per_s']:8.1f} req/s  p50 {s['p50_ms']:6.1f} ms  "
            f"p99 {s['p99_ms']:6.1f} ms  failed {s['failed']}"
        )
    console.print(f"ratio BentoML / bare: {ratio:.2f} (goal >= 0.9)  ->  {path}")


if __name__ == "__main__":
    main()
