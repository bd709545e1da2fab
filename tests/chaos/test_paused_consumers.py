"""Consumers paused while producers run at their peak: retention never deletes an entry a group has not
read and acknowledged.

A stack whose streams are capped at 1,000 entries and trimmed every second. The monitor (the only group
on ``predictions``) is frozen with SIGSTOP, as a stalled container or a long GC pause would leave it,
while serving answers batch requests as fast as it can and publishes every record to ``predictions``:
tens of times the cap. While it is frozen the stream keeps every entry the group has not read; resumed,
the monitor reads each entry that was ever added, acknowledges it, and only then does retention bring
the stream back to its cap.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from shared import events
from shared.ops.demo_data import generate
from shared.ops.driver import MeshDriver
from tests.support.faults import fault_stack, signal_tree
from tests.support.groups import wait_drained

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]

CAP = 1_000
PEAK_ROWS = 30_000  # records answered while the monitor is frozen: 30 times the cap
STACK_ENV = {
    "MESH_STREAM_MAXLEN": str(CAP),
    "MESH_BUS_RETENTION_INTERVAL_S": "1",
    "MESH_SERVING_SAMPLE_RATE": "1",
}


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshDriver]:
    with pytest.MonkeyPatch.context() as env:
        for name, value in STACK_ENV.items():
            env.setenv(name, value)
        with fault_stack(tmp_path_factory.mktemp("capped")) as driver:
            driver.upload(generate(rows=800, seed=1))
            driver.wait_for_version("1")
            yield driver


def stream_state(client: redis.Redis, stream: str, group: str) -> dict[str, Any]:
    info: Any = client.xinfo_stream(stream)
    [found] = [g for g in client.xinfo_groups(stream) if g["name"].decode() == group]
    return {
        "length": int(info["length"]),
        "added": int(info["entries-added"]),
        "read_by_group": int(found["entries-read"] or 0),
        "lag": found["lag"],
        "pending": int(found["pending"]),
    }


def test_retention_keeps_what_a_paused_group_has_not_read_and_trims_once_it_has(
    capped: MeshDriver, chaos_report: dict[str, Any]
) -> None:
    client, stream = capped.redis, str(events.PREDICTIONS)
    wait_drained(client, timeout=120)
    before = stream_state(client, stream, "monitor")

    signal_tree(capped.settings, "monitor", signal.SIGSTOP, wait_s=0)
    try:
        started = time.monotonic()
        answered = len(capped.send_traffic(generate(rows=PEAK_ROWS, seed=7)))
        peak_s = time.monotonic() - started
        time.sleep(3)  # three retention passes of the other services over the frozen group's stream
        paused = stream_state(client, stream, "monitor")
    finally:
        signal_tree(capped.settings, "monitor", signal.SIGCONT, wait_s=0)

    behind = wait_drained(client, timeout=300)
    resumed = stream_state(client, stream, "monitor")
    time.sleep(3)  # retention passes now that every entry is acknowledged
    trimmed = stream_state(client, stream, "monitor")
    chaos_report["paused_consumers"] = {
        "cap": CAP,
        "records_answered": answered,
        "records_per_s": round(answered / peak_s),
        "stream_length_before": before["length"],
        "while_paused": paused,
        "after_resume": resumed,
        "after_retention": trimmed,
        "still_pending_or_unread": [g.__dict__ for g in behind],
    }

    assert answered == PEAK_ROWS
    assert paused["added"] - before["added"] == PEAK_ROWS  # every answer sampled (rate 1)
    # Frozen (it may have read an entry or two just before): nothing it had not read and acknowledged was
    # trimmed; the stream holds all of it, far past the cap.
    not_acknowledged = paused["lag"] + paused["pending"]
    assert not_acknowledged == PEAK_ROWS and paused["length"] >= not_acknowledged > CAP
    # Resumed: it read every entry ever added, and acknowledged each.
    assert not behind
    assert resumed["read_by_group"] == resumed["added"] and resumed["lag"] == 0 and resumed["pending"] == 0
    # Then, and only then, retention brought the stream back to its cap.
    assert trimmed["length"] <= CAP + 100
