"""Twenty candidates of one model ready at once, judged by two registry replicas: each gets one decision
and at most one registered version, no request to the registry fails with a server error meanwhile, and
the decisions form one chain, each judged against the champion the one before left, so that ``champion``
ends on the last candidate to beat its predecessor by the gate's rule."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared import events
from shared.events import ModelPromoted
from shared.ops.compose import launcher_env
from shared.ops.demo_data import generate
from shared.ops.driver import MeshDriver
from shared.ops.embedded import free_port
from shared.ops.processes import StateFiles
from shared.runtime.retry import wait_until
from shared.runtime.settings import MeshSettings
from tests.support.faults import CHURN, restart, retrying, signal_tree
from tests.support.groups import letters, wait_drained

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1500)]

CANDIDATES = 20


@contextlib.contextmanager
def second_replica(settings: MeshSettings, service: str, log: Path) -> Iterator[str]:
    """Another ``mesh run <service>`` process on the stack, as ``--scale`` would add; yields its URL as soon
    as it is started (its readiness is the caller's to wait for)."""
    port = free_port()
    env = {**launcher_env(settings), f"MESH_{service.upper()}_PORT": str(port)}
    with log.open("wb") as output:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mesh"), "run", service],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def logged(log: Path, since: int = 0) -> Counter[str]:
    """How many times a service's JSON log says each thing (its lines' ``event``) after byte ``since``."""
    text = log.read_bytes()[since:].decode(errors="replace")
    lines = (json.loads(line) for line in text.splitlines() if line.startswith("{"))
    return Counter(str(line.get("event")) for line in lines)


def test_twenty_candidates_at_once_get_one_decision_each_in_one_chain(
    stack: MeshDriver, chaos_report: dict[str, Any], tmp_path: Path
) -> None:
    settings = stack.settings
    letters_before = len(letters(stack.redis))
    decided_before = {
        e.event_id for s in (events.MODEL_PROMOTED, events.MODEL_REJECTED) for e in stack.events(s)
    }
    trained_before = {e.event_id for e in stack.events(events.MODEL_TRAINED)}

    # The registry away while the candidates are trained, so they are all waiting when it comes back.
    signal_tree(settings, "registry", signal.SIGTERM, wait_s=45)
    failures: list[str] = []
    for k in range(CANDIDATES):  # more rows each time: later candidates tend to be better
        retrying(lambda k=k: stack.upload(generate(rows=300 + 40 * k, seed=900 + k)), failures)

    def candidates() -> list[Any] | None:
        found = [e for e in stack.events(events.MODEL_TRAINED) if e.event_id not in trained_before]
        return found if len(found) >= CANDIDATES else None

    trained = stack.wait_for(f"{CANDIDATES} candidates trained", candidates)
    champion_before = stack.mlflow.get_model_version_by_alias(CHURN, "champion").version

    statuses: Counter[int] = Counter()
    done = threading.Event()

    def poll_registry() -> None:  # an operator reading the model while the candidates are judged
        with httpx.Client(base_url=stack.registry, timeout=30) as http:
            while not done.is_set():
                with contextlib.suppress(httpx.TransportError):  # between the stop and the restart
                    statuses[http.get(f"/models/{CHURN}").status_code] += 1
                time.sleep(0.2)

    poller = threading.Thread(target=poll_registry, name="poll-registry")
    poller.start()
    main_log = StateFiles(settings).log("registry")
    main_log_start = main_log.stat().st_size  # the scenarios before this one wrote the log too
    started = time.monotonic()
    try:
        # Both replicas start together, so that each finds candidates waiting when its consumers start.
        with second_replica(settings, "registry", tmp_path / "registry-2.log") as second:
            restart(settings)
            wait_until(lambda: _ready(second), timeout=90, what="a second registry replica")
            behind = wait_drained(stack.redis, timeout=600)
            judged_in_s = round(time.monotonic() - started, 1)
    finally:
        done.set()
        poller.join(timeout=60)
    assert not behind, behind

    runs = {e.payload.run_id for e in trained}
    decisions = [
        e
        for s in (events.MODEL_PROMOTED, events.MODEL_REJECTED)
        for e in stack.events(s)
        if e.event_id not in decided_before and e.payload.run_id in runs
    ]
    promoted = [e.payload for e in decisions if isinstance(e.payload, ModelPromoted)]
    rejected = [e.payload for e in decisions if not isinstance(e.payload, ModelPromoted)]
    versions = stack.mlflow.search_model_versions(f"name = '{CHURN}'")
    ours = [v for v in versions if v.run_id in runs]
    # One chain from the champion before: each promotion judged against the one before it, none twice.
    successor = {p.previous_version: p.version for p in promoted}
    chain, at = [champion_before], champion_before
    while at in successor:
        at = successor[at]
        chain.append(at)
    champion_after = stack.mlflow.get_model_version_by_alias(CHURN, "champion").version
    judged_against = Counter((e.payload.evidence.get("champion") or {}).get("version") for e in decisions)
    replicas = [logged(main_log, since=main_log_start), logged(tmp_path / "registry-2.log")]
    failed = sum(replica["handler failed"] for replica in replicas)
    decided_by = [replica["model promoted"] + replica["model rejected"] for replica in replicas]
    chaos_report["twenty_candidates"] = {
        "candidates": len(trained),
        "decisions": len(decisions),
        "promoted": len(promoted),
        "rejected": len(rejected),
        "registered_versions": len(ours),
        "champion": {"before": champion_before, "after": champion_after, "chain": chain},
        "judged_against_each_champion": dict(judged_against),
        "judged_in_s": judged_in_s,
        "registry_http_statuses": dict(statuses),
        "handler_attempts_failed": failed,
        "decided_by_each_replica": decided_by,
        "dead_lettered": len(letters(stack.redis)) - letters_before,
    }

    assert len(decisions) == CANDIDATES and len({e.payload.run_id for e in decisions}) == CANDIDATES
    assert len(ours) == len(promoted) == len({v.version for v in ours})
    assert len(chain) == len(promoted) + 1, f"promotions judged against the same champion: {promoted}"
    assert champion_after == chain[-1] == max((p.version for p in promoted), key=int, default=champion_before)
    assert set(judged_against) <= set(chain), judged_against
    assert not [status for status in statuses if status >= 500], statuses
    assert failed == 0 and len(letters(stack.redis)) == letters_before
    assert all(decided_by), f"one replica judged nothing: {decided_by}"
