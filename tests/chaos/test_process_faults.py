"""kill -9 of every consuming service, one after another at random moments, while two models take
uploads, predictions and labels; each is restarted as ``mesh up`` restarts what is down.

Afterwards every event must have been handled exactly once in effect: each upload one snapshot, one
feature set, one training run and one registry decision; no registered version twice; nothing left
pending. The report counts what was sent, re-emitted after a crash, dead-lettered, lost and duplicated."""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from rich.console import Console

from shared import events
from shared.ops import launcher
from shared.ops.demo_data import cancer, generate
from shared.ops.driver import MeshDriver, MeshDriverError
from shared.ops.processes import StateFiles, alive
from shared.runtime.settings import MeshSettings
from tests.support.groups import letters, wait_drained
from tests.support.processes import process_tree
from tests.support.stack import running_stack, stack_settings

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1500)]

CHURN, CANCER = "churn-demo", "cancer-demo"
VICTIMS = ("ingest", "features", "training", "registry", "monitor", "serving")
MAX_UPLOADS_PER_MODEL = 16  # one pair every UPLOAD_EVERY_S while the kills go on, so each lands mid-work
UPLOAD_EVERY_S = 6
TRAFFIC_ROWS = 100  # records per /predict_batch call, each one predictions event and one label
MIN_EVENTS = 1_000
# A killed consumer's entries stay pending under its name until another one's sweep takes them: short
# timings here so the scenario waits seconds for that, not the production 30 s.
FAST_RECLAIM = {"MESH_BUS_RECLAIM_IDLE_MS": "3000", "MESH_BUS_RECLAIM_INTERVAL_MS": "1000"}


# The consumer groups whose pending entries show a service mid-handler: killed then, a kill lands in
# the middle of the work (a fit, a registration, a window) instead of between two events. Ingest's
# uploads come over HTTP and serving's work is requests: they are killed whenever their turn comes.
WORK = {
    "features": [(events.DATA_INGESTED, "features")],
    "training": [(events.FEATURES_READY, "training"), (events.RETRAIN_REQUESTED, "training")],
    "registry": [(events.MODEL_TRAINED, "registry")],
    "monitor": [(events.PREDICTIONS, "monitor"), (events.LABELS, "monitor")],
}


def in_hand(client: redis.Redis, name: str, timeout: float = 30) -> int:
    """Wait (up to ``timeout``) until ``name`` holds unacknowledged entries; how many it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = 0
        for stream, group in WORK.get(name, []):
            with contextlib.suppress(redis.ResponseError):  # no such group yet
                held += int(client.xpending(stream, group)["pending"])
        if held or name not in WORK:
            return held
        time.sleep(0.02)
    return 0


def kill_9(settings: MeshSettings, name: str) -> None:
    """SIGKILL ``name``'s process and every process under it, as a container runtime's kill would."""
    record = StateFiles(settings).records()[name]
    for pid, _ in reversed(process_tree(record.pid)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 20
    while alive(record) and time.monotonic() < deadline:
        time.sleep(0.1)


def retrying(what: Callable[[], Any], failures: list[str], stop_after_s: float = 120) -> Any:
    """``what()``, again after each failure (a service being down), until it succeeds or time runs out."""
    deadline = time.monotonic() + stop_after_s
    while True:
        try:
            return what()
        except (httpx.HTTPError, MeshDriverError) as exc:
            failures.append(type(exc).__name__)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshDriver]:
    with pytest.MonkeyPatch.context() as env:
        for name, value in FAST_RECLAIM.items():
            env.setenv(name, value)
        with running_stack(stack_settings(tmp_path_factory.mktemp("faults"))) as driver:
            yield driver


def test_every_event_is_handled_once_in_effect_across_kill_9_of_each_service(
    stack: MeshDriver, chaos_report: dict[str, Any]
) -> None:
    settings = stack.settings
    stack.upload(generate(rows=600, seed=1))
    stack.upload(cancer(rows=400, seed=1), dataset="cancer")
    stack.wait_for_version("1", CHURN)
    stack.wait_for_version("1", CANCER)

    done = threading.Event()
    upload_ids: list[str] = []
    upload_failures: list[str] = []
    traffic_failures: list[str] = []
    sent = {"predictions": 0, "labels": 0}
    kills: list[dict[str, Any]] = []

    def uploads() -> None:
        with MeshDriver(settings) as driver:
            for k in range(MAX_UPLOADS_PER_MODEL):
                churn, samples = generate(rows=400, seed=200 + k), cancer(rows=300, seed=200 + k)
                for batch, dataset in ((churn, "demo"), (samples, "cancer")):
                    answer = retrying(lambda b=batch, d=dataset: driver.upload(b, d), upload_failures)
                    upload_ids.append(answer["event_id"])
                if done.wait(UPLOAD_EVERY_S):
                    return

    def traffic() -> None:
        with MeshDriver(settings) as driver:
            k = 0
            while not done.is_set() or sum(sent.values()) < MIN_EVENTS:
                k += 1
                churn = generate(rows=TRAFFIC_ROWS, seed=1000 + k)
                samples = cancer(rows=TRAFFIC_ROWS, seed=1000 + k)
                for model, batch, label in ((CHURN, churn, "churned"), (CANCER, samples, "malignant")):
                    ids = retrying(lambda m=model, b=batch: driver.send_traffic(b, m), traffic_failures)
                    sent["predictions"] += len(ids)
                    retrying(lambda i=ids, b=batch, c=label: driver.send_labels(i, b[c]), traffic_failures)
                    sent["labels"] += len(ids)
                time.sleep(0.2)  # steady live traffic, not a load test: the kills are the point here

    def killer() -> None:
        chooser = random.Random(11)
        for name in chooser.sample(VICTIMS, len(VICTIMS)):
            time.sleep(chooser.uniform(1, 4))
            held = in_hand(stack.redis, name)
            kill_9(settings, name)
            killed = time.monotonic()
            output = io.StringIO()
            assert launcher.up(settings, console=Console(file=output, width=200)) == 0, output.getvalue()
            back = round(time.monotonic() - killed, 1)
            kills.append({"service": name, "entries_in_hand": held, "back_after_s": back})

    threads = [threading.Thread(target=t, name=t.__name__) for t in (uploads, traffic, killer)]
    for thread in threads:
        thread.start()
    threads[2].join(timeout=900)
    done.set()
    threads[0].join(timeout=600)
    threads[1].join(timeout=600)

    behind = wait_drained(stack.redis, timeout=300)
    ingested = stack.events(events.DATA_INGESTED)
    ready = stack.events(events.FEATURES_READY)
    trained = stack.events(events.MODEL_TRAINED)
    decided = [*stack.events(events.MODEL_PROMOTED), *stack.events(events.MODEL_REJECTED)]

    def caused(envelopes: list[Any]) -> dict[str, set[str]]:
        by_cause: dict[str, set[str]] = defaultdict(set)
        for envelope in envelopes:
            by_cause[envelope.causation_id or ""].add(envelope.event_id)
        return by_cause

    features_of, runs_of = caused(ready), caused(trained)
    decisions_of = caused(decided)
    feature_sets = [next(iter(features_of[u])) for u in upload_ids if len(features_of[u]) == 1]
    runs = [next(iter(runs_of[f])) for f in feature_sets if len(runs_of[f]) == 1]
    lost = {
        "features": [u for u in upload_ids if not features_of[u]],
        "training": [f for f in feature_sets if not runs_of[f]],
        "decision": [r for r in runs if not decisions_of[r]],
    }
    duplicated = {
        # a re-emitted event (same id, after a crash) is no second effect; a second id for one snapshot is
        "snapshots": len({e.event_id for e in ingested}) - len({e.payload.snapshot_id for e in ingested}),
        "feature_sets": sum(len(features_of[u]) - 1 for u in upload_ids if features_of[u]),
        "training_runs": sum(len(runs_of[f]) - 1 for f in feature_sets if runs_of[f]),
        "decisions": sum(len(decisions_of[r]) - 1 for r in runs if decisions_of[r]),
    }
    versions = {model: stack.mlflow.search_model_versions(f"name = '{model}'") for model in (CHURN, CANCER)}
    versions_per_run: dict[str, int] = defaultdict(int)
    for found in versions.values():
        for version in found:
            versions_per_run[version.run_id] += 1
    duplicated["model_versions"] = sum(n - 1 for n in versions_per_run.values())
    entries = {str(s): int(stack.redis.xlen(s)) for s in events.ALL_STREAMS}
    handled = {events.DATA_INGESTED: ingested, events.FEATURES_READY: ready, events.MODEL_TRAINED: trained}
    distinct = {str(s): len({e.event_id for e in envelopes}) for s, envelopes in handled.items()}
    dead_letters = letters(stack.redis)
    chaos_report["kill_9_each_service"] = {
        "kills": kills,
        "sent": {"uploads": len(upload_ids), **sent},
        "events_through_two_models": len(upload_ids) + sum(sent.values()),
        "re_emitted_entries": {s: entries[s] - n for s, n in distinct.items()},
        "dead_lettered": len(dead_letters),
        "dead_letter_reasons": sorted({letter["error"][:80] for _, letter in dead_letters}),
        "lost": {step: len(ids) for step, ids in lost.items()},
        "duplicated_effects": duplicated,
        "requests_retried": {"uploads": len(upload_failures), "predict_or_labels": len(traffic_failures)},
        "still_pending_or_unread": [g.__dict__ for g in behind],
    }

    assert len(kills) == len(VICTIMS)
    assert not behind, f"entries left pending or unread: {behind}"
    assert len(upload_ids) >= 2 * 3
    assert lost == {"features": [], "training": [], "decision": []}
    assert all(count == 0 for count in duplicated.values()), duplicated
    assert sum(sent.values()) >= MIN_EVENTS
