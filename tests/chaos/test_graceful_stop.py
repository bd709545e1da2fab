"""SIGTERM to each service while it holds work, as ``docker compose stop`` or a Kubernetes rollout sends
it: the service exits within its grace period, and each entry it held is either finished (its effect on
the next stream) and acknowledged, or still pending for another consumer, never acknowledged unfinished.
Brought back, the mesh then handles every upload once in effect."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Any

import pytest
import redis

from shared import events
from shared.bus import entry_body, read_entry
from shared.events import Stream
from shared.ops.demo_data import cancer, generate
from shared.ops.driver import MeshDriver
from tests.support.faults import CANCER, CHURN, WORK, in_hand, judge, pids, restart, signal_tree, uploading
from tests.support.groups import letters

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1500)]

GRACE_S = 35  # docker-compose.yml's stop_grace_period: past it the runtime kills
ORDER = ("training", "features", "registry", "monitor", "ingest", "serving")
# An entry each group held is finished when the event it causes is on these streams.
EFFECTS: dict[str, tuple[Stream[Any], ...]] = {
    "features": (events.FEATURES_READY,),
    "training": (events.MODEL_TRAINED,),
    "registry": (events.MODEL_PROMOTED, events.MODEL_REJECTED),
}


def held_entries(client: redis.Redis, service: str) -> dict[tuple[str, str], str]:
    """(stream, entry id) -> event id of every entry ``service``'s groups hold unacknowledged."""
    held = {}
    for stream, group in WORK.get(service, []):
        with contextlib.suppress(redis.ResponseError):
            for pending in client.xpending_range(stream, group, min="-", max="+", count=1000):
                entry_id = pending["message_id"].decode()
                found: Any = client.xrange(stream, entry_id, entry_id)
                if found:
                    held[(str(stream), entry_id)] = read_entry(entry_body(found[0][1]), stream).event_id
    return held


def settled(driver: MeshDriver, service: str, held: dict[tuple[str, str], str]) -> tuple[int, list[str]]:
    """Of the entries ``service`` held: how many are no longer pending, and the event ids of those among
    them whose effect is nowhere (acknowledged unfinished)."""
    still = held_entries(driver.redis, service)
    caused = {e.causation_id for stream in EFFECTS.get(service, ()) for e in driver.events(stream)}
    acked = {key: event_id for key, event_id in held.items() if key not in still}
    if service not in EFFECTS:  # the monitor's effect is its window state, not an event per entry
        return len(acked), []
    return len(acked), [event_id for event_id in acked.values() if event_id not in caused]


def test_sigterm_mid_work_exits_in_grace_and_never_acknowledges_unfinished_work(
    stack: MeshDriver, chaos_report: dict[str, Any]
) -> None:
    settings = stack.settings
    before, letters_before = pids(settings), len(letters(stack.redis))
    ids: list[str] = []
    failures: list[str] = []
    stops: list[dict[str, Any]] = []
    traffic_failures: list[str] = []
    done = threading.Event()

    def traffic() -> None:  # live predictions and labels, for the monitor's windows and serving's requests
        with MeshDriver(settings) as driver:
            k = 0
            while not done.is_set():
                k += 1
                for model, batch, label in (
                    (CHURN, generate(rows=100, seed=5000 + k), "churned"),
                    (CANCER, cancer(rows=100, seed=5000 + k), "malignant"),
                ):
                    try:
                        request_ids = driver.send_traffic(batch, model)
                        driver.send_labels(request_ids, batch[label])
                    except Exception as exc:  # serving or the monitor stopped: counted, traffic goes on
                        traffic_failures.append(type(exc).__name__)
                        time.sleep(0.5)

    thread = threading.Thread(target=traffic, name="traffic")
    thread.start()
    try:
        with uploading(stack, ids, failures, seed=700, count=len(ORDER) + 2, every_s=5):
            for service in ORDER:
                count = in_hand(stack.redis, service, timeout=60)
                held = held_entries(stack.redis, service)
                took = signal_tree(settings, service, signal.SIGTERM, wait_s=GRACE_S + 10)
                acked, unfinished = settled(stack, service, held)
                stops.append(
                    {
                        "service": service,
                        "entries_in_hand": count,
                        "exited_after_s": took,
                        "finished_and_acked": acked,
                        "acknowledged_unfinished": unfinished,
                    }
                )
                restart(settings)
    finally:
        done.set()
        thread.join(timeout=120)
    figures: dict[str, Any] = {
        "stops": stops,
        "grace_s": GRACE_S,
        "traffic_requests_failed": len(traffic_failures),
    }
    chaos_report["sigterm_mid_work"] = figures
    judge(
        stack,
        ids,
        figures,
        before=before,
        letters_before=letters_before,
        models=(CHURN,),
        restarted_by_design=ORDER,
    )
    assert all(stop["exited_after_s"] <= GRACE_S for stop in stops), stops
    assert not [stop for stop in stops if stop["acknowledged_unfinished"]], stops
    assert sum(1 for stop in stops if stop["entries_in_hand"]) >= 3, "too few stops landed mid-work"
