"""kill -9 of every consuming service, one after another at random moments, while two models take
uploads, predictions and labels; each is restarted as ``mesh up`` restarts what is down.

Afterwards every event must have been handled exactly once in effect: each upload one snapshot, one
feature set, one training run and one registry decision; no registered version twice; nothing left
pending. The report counts what was sent, re-emitted after a crash, dead-lettered, lost and duplicated."""

from __future__ import annotations

import random
import signal
import threading
import time
from typing import Any

import pytest

from shared.ops.demo_data import cancer, generate
from shared.ops.driver import MeshDriver
from tests.support.faults import (
    CANCER,
    CHURN,
    in_hand,
    restart,
    retrying,
    signal_tree,
    upload_effects,
)
from tests.support.groups import letters, wait_drained

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1500)]

VICTIMS = ("ingest", "features", "training", "registry", "monitor", "serving")
MAX_UPLOADS_PER_MODEL = 16  # one pair every UPLOAD_EVERY_S while the kills go on, so each lands mid-work
UPLOAD_EVERY_S = 6
TRAFFIC_ROWS = 100  # records per /predict_batch call, each one predictions event and one label
MIN_EVENTS = 1_000


def test_every_event_is_handled_once_in_effect_across_kill_9_of_each_service(
    stack: MeshDriver, chaos_report: dict[str, Any]
) -> None:
    settings = stack.settings

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
            signal_tree(settings, name, signal.SIGKILL)
            killed = time.monotonic()
            restart(settings)
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
    effects = upload_effects(stack, upload_ids, (CHURN, CANCER))
    dead_letters = letters(stack.redis)
    chaos_report["kill_9_each_service"] = {
        "kills": kills,
        "sent": {"uploads": len(upload_ids), **sent},
        "events_through_two_models": len(upload_ids) + sum(sent.values()),
        "re_emitted_entries": effects.re_emitted,
        "dead_lettered": len(dead_letters),
        "dead_letter_reasons": sorted({letter["error"][:80] for _, letter in dead_letters}),
        "lost": {step: len(ids) for step, ids in effects.lost.items()},
        "duplicated_effects": effects.duplicated,
        "requests_retried": {"uploads": len(upload_failures), "predict_or_labels": len(traffic_failures)},
        "still_pending_or_unread": [g.__dict__ for g in behind],
    }

    assert len(kills) == len(VICTIMS)
    assert not behind, f"entries left pending or unread: {behind}"
    assert len(upload_ids) >= 2 * 3
    assert effects.lost == {"features": [], "training": [], "decision": []}
    assert all(count == 0 for count in effects.duplicated.values()), effects.duplicated
    assert sum(sent.values()) >= MIN_EVENTS
