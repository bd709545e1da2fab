"""Faults the chaos scenarios inflict on a running stack, and how they wait for its state: signalling a
component's whole process tree, restarting what is down as ``mesh up`` does, telling when a service holds
unacknowledged work, and retrying a client call across an outage."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from rich.console import Console

from shared import events
from shared.events import Envelope
from shared.ops import launcher
from shared.ops.demo_data import generate
from shared.ops.driver import MeshDriver, MeshDriverError
from shared.ops.processes import StateFiles, alive
from shared.runtime.settings import SERVICE_NAMES, MeshSettings
from tests.support.groups import letters, wait_drained
from tests.support.processes import process_tree
from tests.support.stack import running_stack, stack_settings

# The consumer groups whose pending entries show a service mid-handler: stopped then, a fault lands in
# the middle of the work (a fit, a registration, a window) instead of between two events. Ingest's
# uploads come over HTTP and serving's work is requests: they have no such entries.
WORK = {
    "features": [(events.DATA_INGESTED, "features")],
    "training": [(events.FEATURES_READY, "training"), (events.RETRAIN_REQUESTED, "training")],
    "registry": [(events.MODEL_TRAINED, "registry")],
    "monitor": [(events.PREDICTIONS, "monitor"), (events.LABELS, "monitor")],
}


CHURN, CANCER = "churn-demo", "cancer-demo"  # the demo's two models
CLK_TCK = 100  # /proc/<pid>/stat counts CPU time in these on Linux

# A stopped consumer's entries stay pending under its name until another one's sweep takes them: short
# timings in the scenarios so they wait seconds for that, not the production 30 s.
FAST_RECLAIM = {"MESH_BUS_RECLAIM_IDLE_MS": "3000", "MESH_BUS_RECLAIM_INTERVAL_MS": "1000"}


@contextlib.contextmanager
def fault_stack(state: Path) -> Iterator[MeshDriver]:
    """The whole stack in ``state``, as processes, with :data:`FAST_RECLAIM`; a driver of it."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in FAST_RECLAIM.items():
            env.setenv(name, value)
        with running_stack(stack_settings(state)) as driver:
            yield driver


def pids(settings: MeshSettings) -> dict[str, int]:
    """Each running component's process id, as the launcher recorded it."""
    return {name: record.pid for name, record in StateFiles(settings).records().items()}


def in_hand(client: redis.Redis, name: str, timeout: float = 30) -> int:
    """Wait (up to ``timeout``) until service ``name`` holds unacknowledged entries; how many it held."""
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


def signal_tree(settings: MeshSettings, name: str, sig: signal.Signals, *, wait_s: float = 20) -> float:
    """Send ``sig`` to component ``name``'s process and every process under it, as a container runtime's
    stop or kill would; wait up to ``wait_s`` for it to be gone. Seconds it took to go (``wait_s`` if not)."""
    record = StateFiles(settings).records()[name]
    sent = time.monotonic()
    for pid, _ in reversed(process_tree(record.pid)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = sent + wait_s
    while alive(record) and time.monotonic() < deadline:
        time.sleep(0.05)
    return round(time.monotonic() - sent, 2)


def restart(settings: MeshSettings) -> None:
    """``mesh up``: start whatever of the stack is down, and wait until it is healthy."""
    output = io.StringIO()
    assert launcher.up(settings, console=Console(file=output, width=200)) == 0, output.getvalue()


def retrying(what: Callable[[], Any], failures: list[str], stop_after_s: float = 120) -> Any:
    """``what()``, again after each failure (a service being down), until it succeeds or time runs out."""
    deadline = time.monotonic() + stop_after_s
    while True:
        try:
            return what()
        except (httpx.HTTPError, MeshDriverError) as exc:
            status = re.search(r"answered \d+", str(exc))  # a service's answer, else what the client met
            failures.append(status.group(0) if status else type(exc).__name__)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@dataclass(frozen=True)
class UploadEffects:
    """What the uploads of a scenario came to, step by step along their causation chains."""

    lost: dict[str, list[str]]  # step -> the ids of the events that never got it
    duplicated: dict[str, int]  # effect -> how many times one cause had it more than once
    re_emitted: dict[str, int]  # stream -> entries beyond its distinct events (the same id again)
    decisions: dict[str, Envelope[Any]]  # upload id -> its promotion or rejection


def upload_effects(driver: MeshDriver, upload_ids: list[str], models: tuple[str, ...]) -> UploadEffects:
    """Follow each upload to its feature set, run and registry decision: which were lost, which effects
    happened twice (a re-emitted event, the same id after a crash, is no second effect; a second id for
    one cause is), and no registered version twice for one run."""
    ingested = driver.events(events.DATA_INGESTED)
    ready = driver.events(events.FEATURES_READY)
    trained = driver.events(events.MODEL_TRAINED)
    decided = [*driver.events(events.MODEL_PROMOTED), *driver.events(events.MODEL_REJECTED)]

    def caused(envelopes: list[Envelope[Any]]) -> dict[str, list[Envelope[Any]]]:
        by_cause: dict[str, dict[str, Envelope[Any]]] = defaultdict(dict)
        for envelope in envelopes:
            by_cause[envelope.causation_id or ""][envelope.event_id] = envelope
        return defaultdict(list, {cause: list(found.values()) for cause, found in by_cause.items()})

    features_of, runs_of, decisions_of = caused(ready), caused(trained), caused(decided)
    feature_sets = {u: features_of[u][0].event_id for u in upload_ids if len(features_of[u]) == 1}
    runs = {u: runs_of[f][0].event_id for u, f in feature_sets.items() if len(runs_of[f]) == 1}
    lost = {
        "features": [u for u in upload_ids if not features_of[u]],
        "training": [f for f in feature_sets.values() if not runs_of[f]],
        "decision": [r for r in runs.values() if not decisions_of[r]],
    }
    duplicated = {
        "snapshots": len({e.event_id for e in ingested}) - len({e.payload.snapshot_id for e in ingested}),
        "feature_sets": sum(len(features_of[u]) - 1 for u in upload_ids if features_of[u]),
        "training_runs": sum(len(runs_of[f]) - 1 for f in feature_sets.values() if runs_of[f]),
        "decisions": sum(len(decisions_of[r]) - 1 for r in runs.values() if decisions_of[r]),
    }
    versions_per_run: Counter[str] = Counter()
    for model in models:
        versions_per_run.update(v.run_id for v in driver.mlflow.search_model_versions(f"name = '{model}'"))
    duplicated["model_versions"] = sum(n - 1 for n in versions_per_run.values())
    handled = {events.DATA_INGESTED: ingested, events.FEATURES_READY: ready, events.MODEL_TRAINED: trained}
    re_emitted = {
        str(stream): int(driver.redis.xlen(stream)) - len({e.event_id for e in envelopes})
        for stream, envelopes in handled.items()
    }
    decisions = {u: decisions_of[r][0] for u, r in runs.items() if decisions_of[r]}
    return UploadEffects(lost, duplicated, re_emitted, decisions)


@contextlib.contextmanager
def uploading(
    driver: MeshDriver, ids: list[str], failures: list[str], *, seed: int, count: int = 4, every_s: float = 4
) -> Iterator[None]:
    """Upload ``count`` fresh demo batches, one every ``every_s``, retrying each through an outage, while
    the body runs (their event ids into ``ids``, failed attempts into ``failures``); then wait for the
    last of them."""

    def uploads() -> None:
        with MeshDriver(driver.settings) as own:
            for k in range(count):
                batch = generate(rows=400, seed=seed + k)
                ids.append(retrying(lambda b=batch: own.upload(b), failures, stop_after_s=180)["event_id"])
                time.sleep(every_s)

    thread = threading.Thread(target=uploads, name="uploads")
    thread.start()
    try:
        yield
    finally:
        thread.join(timeout=300)
    assert not thread.is_alive(), "uploads still retrying five minutes after the fault"


def cpu_seconds(settings: MeshSettings) -> dict[str, float]:
    """CPU time each service's process tree has used so far."""
    used = {}
    for name, record in StateFiles(settings).records().items():
        if name not in SERVICE_NAMES:
            continue
        ticks = 0
        for pid, _ in process_tree(record.pid):
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
        used[name] = ticks / CLK_TCK
    return used


def judge(
    driver: MeshDriver,
    ids: list[str],
    figures: dict[str, Any],
    *,
    before: dict[str, int],
    letters_before: int,
    models: tuple[str, ...] = (CHURN,),
    restarted_by_design: tuple[str, ...] = (),
) -> None:
    """Every upload of ``ids`` handled once in effect, nothing pending, no service restarted (but those
    restarted by design) since ``before`` (:func:`pids`), no dead letter beyond ``letters_before``; the
    figures (``figures`` is completed in place, for the report) say by how much."""
    behind = wait_drained(driver.redis, timeout=300)
    effects = upload_effects(driver, ids, models)
    new_letters = letters(driver.redis)[letters_before:]
    after = pids(driver.settings)
    restarted = [n for n in SERVICE_NAMES if before.get(n) != after.get(n) and n not in restarted_by_design]
    figures.update(
        uploads=len(ids),
        lost={step: len(found) for step, found in effects.lost.items()},
        duplicated_effects=effects.duplicated,
        re_emitted_entries=effects.re_emitted,
        dead_lettered=len(new_letters),
        dead_letter_reasons=sorted({letter["error"][:100] for _, letter in new_letters}),
        services_restarted=sorted(restarted),
        still_pending_or_unread=[g.__dict__ for g in behind],
    )
    assert not restarted, f"a service died and had to be restarted: {figures}"
    assert not behind, f"entries left pending or unread: {behind}"
    assert effects.lost == {"features": [], "training": [], "decision": []}, effects.lost
    assert all(count == 0 for count in effects.duplicated.values()), effects.duplicated
    assert not new_letters, figures["dead_letter_reasons"]
