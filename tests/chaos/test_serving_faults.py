"""Serving under faults, on the whole stack as processes, with paced prediction load from a process of its
own (bench/paced_load.py, every request recorded): a promotion hot-swapped under load, a serving
worker killed with SIGKILL under load (one worker, then two), and promotions of a version whose model
artifact is missing, then corrupt.

The report gives the rate the machine sustains and the one loaded at, the failed requests, p99 latency
quiet and in each fault's window, and how long serving took to answer again after the kill."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bench.paced_load import PacedLoad, failures, stretch, window
from bench.paced_load import paced_load as bench_paced_load
from shared import events
from shared.ops.demo_data import EXAMPLE_RECORD, generate
from shared.ops.driver import MeshDriver
from shared.ops.processes import StateFiles, alive, registry_token
from shared.runtime.retry import wait_until
from shared.runtime.settings import REPO_ROOT
from tests.support.processes import process_tree
from tests.support.serving import ServingServer, serving_env
from tests.support.stack import running_stack, stack_settings

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1500)]

MODEL = "churn-demo"
BODY = json.dumps({"model": MODEL, "features": EXAMPLE_RECORD})
TARGET_RATE = 200  # requests per second, unless the machine sustains less (then HEADROOM of what it does)
HEADROOM = 0.8  # paced load beyond what a server sustains only measures its queue
CONNECTIONS = 16
STEADY_REQUESTS = 1000  # answers counted in each quiet stretch (5 s at the target rate)
WORKER_MODULE = "_bentoml_impl.worker.service"  # BentoML's worker process, under its arbiter
# Reconcile often, so that a broken champion is seen retried (and not announced again) within seconds.
FAST_RECONCILE = {"MESH_SERVING_RECONCILE_S": "3"}


@contextlib.contextmanager
def paced_load(port: int, rate: float, out: Path) -> Iterator[PacedLoad]:
    with bench_paced_load(port, rate, out, body=BODY, connections=CONNECTIONS) as load:
        yield load


def sustained_rate(port: int) -> float:
    """Requests per second serving answers closed-loop (bench/loadgen.py, a process of its own)."""
    args = ["--port", str(port), "--body", BODY, "--connections", str(CONNECTIONS)]
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", *args, "--duration", "5", "--warmup", "1"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    measured: dict[str, Any] = json.loads(out.stdout)
    assert measured["requests"] == measured["ok"] and not measured["connection_errors"], measured
    return float(measured["requests_per_s"])


def serves(url: str) -> bool:
    """The serving at ``url`` answers for the model with a version in memory."""
    try:
        response = httpx.get(f"{url}/models/{MODEL}", timeout=5)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and bool(response.json()["loaded"])


def workers(root: int) -> set[int]:
    """The BentoML worker processes under the serving process ``root``."""
    return {pid for pid, command in process_tree(root) if WORKER_MODULE in command}


def registry_promote(driver: MeshDriver, version: str) -> str:
    """Make ``version`` the champion with the registry's command; the id of the model.promoted it emits."""
    auth = {"authorization": f"Bearer {registry_token(driver.settings)}"}
    url = f"{driver.registry}/models/{MODEL}/promote"
    response = driver.http.post(url, json={"version": version}, headers=auth)
    assert response.status_code == 200, response.text
    event_id: str = response.json()["event_id"]
    return event_id


def model_status(driver: MeshDriver) -> dict[str, Any]:
    response = driver.http.get(f"{driver.serving}/models/{MODEL}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def artifact_dir(driver: MeshDriver, version: str) -> Path:
    """Where the stack's MLflow server keeps the model files of ``version`` of the model."""
    location = driver.mlflow.get_model_version_download_uri(MODEL, version)
    assert location.startswith("mlflow-artifacts:/"), location  # served from --artifacts-destination
    return driver.settings.state_dir / "mlflow" / "artifacts" / location.removeprefix("mlflow-artifacts:/")


def swap_failures(driver: MeshDriver, promotion: str) -> list[events.Envelope[events.ModelSwapFailed]]:
    return [e for e in driver.events(events.MODEL_SWAP_FAILED) if e.causation_id == promotion]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshDriver]:
    with pytest.MonkeyPatch.context() as env:
        for name, value in FAST_RECONCILE.items():
            env.setenv(name, value)
        with running_stack(stack_settings(tmp_path_factory.mktemp("serving-faults"))) as driver:
            driver.upload(generate(rows=600, seed=1))
            driver.wait_for_version("1", MODEL)
            yield driver


@pytest.fixture(scope="module")
def rate(stack: MeshDriver, chaos_report: dict[str, Any]) -> float:
    """The paced load's rate: the target, or HEADROOM of what this machine sustains if that is less."""
    sustained = sustained_rate(stack.settings.serving_port)
    chosen = float(TARGET_RATE) if sustained * HEADROOM >= TARGET_RATE else round(sustained * HEADROOM)
    chaos_report["serving_load"] = {
        "closed_loop_requests_per_s": sustained,
        "connections": CONNECTIONS,
        "paced_rate": chosen,
        "target_rate": TARGET_RATE,
        "what": "POST /predict, one record, the stack's single-worker BentoML serving, sampling to the bus",
    }
    return chosen


def test_a_promotion_is_hot_swapped_under_load_with_no_failed_request(
    stack: MeshDriver, rate: float, tmp_path: Path, chaos_report: dict[str, Any]
) -> None:
    with paced_load(stack.settings.serving_port, rate, tmp_path / "swap.json") as load:
        load.wait_answered(STEADY_REQUESTS, "a steady stretch before the upload")
        uploaded_at = time.time()
        stack.upload(generate(rows=4000, seed=2))
        stack.wait_for_version("2", MODEL)
        load.wait_answered(STEADY_REQUESTS, "a steady stretch after the swap")
        requests = load.stop()

    [promoted] = [e for e in stack.events(events.MODEL_PROMOTED) if e.payload.version == "2"]
    promoted_at = promoted.occurred_at.timestamp()
    first_v2 = min(r.done for r in requests if r.version == f"{MODEL}/2")
    steady = window(requests, 0, uploaded_at)
    swap = window(requests, promoted_at, first_v2)
    chaos_report["serving_hot_swap_under_load"] = {
        "rate": rate,
        "requests": len(requests),
        "failed": failures(requests),
        "versions": dict(Counter(r.version for r in requests)),
        "steady": stretch(steady),
        "training_beside_serving": stretch(window(requests, uploaded_at, promoted_at)),
        "swap": stretch(swap),
        "after": stretch(window(requests, first_v2, float("inf"))),
        "promotion_to_first_v2_answer_s": round(first_v2 - promoted_at, 2),
    }

    assert not failures(requests), failures(requests)
    assert all(r.version in (f"{MODEL}/1", f"{MODEL}/2") and r.worker for r in requests)
    assert {r.version for r in requests} == {f"{MODEL}/1", f"{MODEL}/2"}
    for connection in range(CONNECTIONS):  # each connection's requests are sequential: one switch, 1 -> 2
        versions = [r.version for r in requests if r.connection == connection]
        assert versions == sorted(versions) and versions[0].endswith("/1") and versions[-1].endswith("/2")
    assert stretch(steady)["answered_per_s"] >= 0.9 * rate
    assert swap, "no request was due while the new version loaded"


def kill_a_worker_under_load(root: int, port: int, rate: float, out: Path) -> dict[str, Any]:
    """SIGKILL one BentoML worker of the serving process ``root`` under paced load, until a new worker has
    answered and a steady stretch followed; the figures, and the requests under ``"_requests"``."""
    before = workers(root)
    assert before, process_tree(root)
    with paced_load(port, rate, out) as load:
        load.wait_answered(STEADY_REQUESTS, "a steady stretch before the kill")
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.time()
        replaced = wait_until(
            lambda: workers(root) - before if len(workers(root)) == len(before) else None,
            timeout=120,
            what="a new serving worker",
        )
        spawned_at = time.time()
        # What was due while no worker answered is sent as each connection comes back, then load is steady.
        load.wait_caught_up("the load to catch up after the kill")
        caught_up_at = time.time()
        load.wait_answered(STEADY_REQUESTS, "a steady stretch after the kill")
        requests = load.stop()

    [replacement] = replaced
    answered_again = min(r.done for r in requests if r.ok and r.sent >= killed_at)
    # Keep-alive connections stay with the worker that accepted them: beside a surviving worker, the
    # replacement may be given none of them.
    by_replacement = [r.done for r in requests if r.worker == str(replacement)]
    failed = [r for r in requests if not r.ok]
    return {
        "workers": len(before),
        "failed": failures(requests),
        "failed_sent_before_kill": sum(r.sent < killed_at for r in failed),
        "failed_sent_after_kill": sum(r.sent >= killed_at for r in failed),
        "answered_again_after_s": round(answered_again - killed_at, 2),
        "replacement_spawned_within_s": round(spawned_at - killed_at, 2),
        "replacement_answered_after_s": round(min(by_replacement) - killed_at, 2) if by_replacement else None,
        "steady": stretch(window(requests, 0, killed_at - 0.5)),
        "load_caught_up_within_s": round(caught_up_at - killed_at, 2),
        "outage_and_catch_up": stretch(window(requests, killed_at - 0.5, caught_up_at)),
        "after": stretch(window(requests, caught_up_at, float("inf"))),
        "_requests": requests,
        "_killed_at": killed_at,
    }


def test_a_killed_serving_worker_is_replaced_and_serving_answers_again(
    stack: MeshDriver, rate: float, tmp_path: Path, chaos_report: dict[str, Any]
) -> None:
    record = StateFiles(stack.settings).records()["serving"]
    port = stack.settings.serving_port
    one = kill_a_worker_under_load(record.pid, port, rate, tmp_path / "one.json")
    requests, killed_at = one.pop("_requests"), one.pop("_killed_at")

    # The same with two workers (MESH_SERVING_WORKERS): a serving of its own beside the stack's, on the
    # same Redis and MLflow.
    server = ServingServer(tmp_path / "two", {**serving_env(stack.settings), "MESH_SERVING_WORKERS": "2"})
    try:
        proc = server.start().proc
        assert proc is not None
        wait_until(lambda: len(workers(proc.pid)) == 2 and serves(server.url), timeout=180, what="2 workers")
        two = kill_a_worker_under_load(proc.pid, server.port, rate, tmp_path / "two.json")
    finally:
        server.stop()
    two_requests = two.pop("_requests")
    two.pop("_killed_at")
    chaos_report["serving_worker_kill_9_under_load"] = {"rate": rate, "one_worker": one, "two_workers": two}

    # Restarted by BentoML itself: the serving process the launcher started is the same and alive.
    assert alive(record) and StateFiles(stack.settings).records()["serving"] == record
    # Only requests on the killed worker's connections can fail; new ones wait in the listening socket's
    # backlog (held by the arbiter) until the new worker has loaded the champion and answers.
    assert one["failed_sent_after_kill"] + one["failed_sent_before_kill"] <= CONNECTIONS, one
    assert all(r.ok for r in requests if r.sent >= killed_at + one["answered_again_after_s"] + 1)
    assert one["answered_again_after_s"] < 60
    assert sum(not r.ok for r in two_requests) <= CONNECTIONS, two


def test_a_promotion_of_a_missing_or_corrupt_artifact_leaves_the_old_model_serving(
    stack: MeshDriver, rate: float, tmp_path: Path, chaos_report: dict[str, Any]
) -> None:
    stack.wait_for_version("2", MODEL)
    files = artifact_dir(stack, "1")
    assert (files / "MLmodel").is_file(), files
    moved = files.with_name(f"{files.name}.moved")
    flavor = yaml.safe_load((files / "MLmodel").read_text())["flavors"]["sklearn"]
    outcomes: dict[str, Any] = {}

    def promote_broken(how: str) -> None:
        promotion = registry_promote(stack, "1")
        [failed] = stack.wait_for(
            f"model.swap_failed ({how})", lambda: swap_failures(stack, promotion) or None
        )
        # The reconcile retries the broken champion (it may be repaired) without announcing it again.
        status = stack.wait_for(
            f"a retried load ({how})",
            lambda: (s := model_status(stack))["swap_failed"] and s["swap_failed"]["attempts"] >= 2 and s,
        )
        outcomes[how] = {
            "event": failed.payload.model_dump(),
            "announced": len(swap_failures(stack, promotion)),
            "status": {k: status[k] for k in ("version", "champion_version", "loaded", "swap_failed")},
            "readyz": stack.http.get(f"{stack.serving}/readyz").status_code,
        }

    with paced_load(stack.settings.serving_port, rate, tmp_path / "broken.json") as load:
        load.wait_answered(STEADY_REQUESTS, "a steady stretch before the broken promotions")
        files.rename(moved)
        promote_broken("missing")
        # Corrupted before it is back: a reconcile must not find the intact files meanwhile.
        (moved / flavor["pickled_model"]).write_bytes(os.urandom(4096))
        moved.rename(files)
        registry_promote(stack, "2")
        stack.wait_for("the failure cleared", lambda: model_status(stack)["swap_failed"] is None or None)
        promote_broken("corrupt")
        load.wait_answered(STEADY_REQUESTS, "a steady stretch after the broken promotions")
        requests = load.stop()

    chaos_report["serving_broken_artifact_promoted"] = {
        "rate": rate,
        "requests": len(requests),
        "failed": failures(requests),
        "versions": dict(Counter(r.version for r in requests)),
        "load": stretch(requests),
        **outcomes,
    }
    assert not failures(requests), failures(requests)
    assert {r.version for r in requests} == {f"{MODEL}/2"}
    for how, outcome in outcomes.items():
        assert outcome["announced"] == 1, how
        assert outcome["event"]["version"] == "1" and outcome["event"]["serving_version"] == "2", how
        assert outcome["status"]["version"] == "2" and outcome["status"]["champion_version"] == "1", how
        assert outcome["status"]["loaded"] and outcome["status"]["swap_failed"]["version"] == "1", how
        assert outcome["readyz"] == 200, how
