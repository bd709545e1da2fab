"""``mesh logs -f``: the last lines, then every line appended as it comes, whole lines only, across a
restart that starts the log anew, until Ctrl-C."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from shared.ops import processes

MESH = str(Path(sys.executable).parent / "mesh")


def _reader(process: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _next_lines(lines: queue.Queue[str], count: int, timeout: float = 20.0) -> list[str]:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < count:
        got.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
    return got


def test_follow_prints_new_whole_lines_until_interrupted(tmp_path: Path) -> None:
    logs = tmp_path / "state" / "logs"
    logs.mkdir(parents=True)
    log = logs / "ingest.log"
    log.write_text("one\ntwo\nthree\n")
    env = {**os.environ, "MESH_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "200"}
    process = subprocess.Popen(
        [MESH, "logs", "ingest", "-f", "-n", "2"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        lines = _reader(process)
        assert _next_lines(lines, 2) == ["two", "three"]
        with log.open("a") as handle:
            handle.write("four\nhal")
            handle.flush()
            time.sleep(1.0)  # the follower polls meanwhile: half a line is held back, not printed
            handle.write("f\n")
        assert _next_lines(lines, 2) == ["four", "half"]
        log.write_text("after a restart\n")  # the service restarted: a new, shorter log
        assert _next_lines(lines, 1) == ["after a restart"]
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0


def test_the_tail_and_the_follower_share_one_snapshot_of_where_each_log_ends(tmp_path: Path) -> None:
    # A line appended after the snapshot is the follower's to print, never the tail's as well; a half
    # line at the end is left to the follower, to print once it is whole.
    log = tmp_path / "serving.log"
    log.write_text("one\ntwo\nhal")
    end = processes.whole_lines_end(log)
    with log.open("a") as handle:
        handle.write("f\nlater\n")
    assert end == len("one\ntwo\n")
    assert processes.tail(log, 5, end) == ["one", "two"]
    assert processes.tail(log, 5) == ["one", "two", "half", "later"]
    log.write_text("no newline yet")
    assert processes.whole_lines_end(log) == 0
