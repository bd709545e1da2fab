"""bench.footprint's measurement on a real process tree: a parent, its child and its busy grandchild."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from bench.footprint import family, measure
from shared.runtime.retry import wait_until

# A parent that starts a child, which starts a grandchild spinning on the CPU; all wait to be killed.
TREE = textwrap.dedent(
    """
    import subprocess, sys, time
    depth = int(sys.argv[1])
    if depth < 2:
        subprocess.Popen([sys.executable, __file__, str(depth + 1)])
    if depth == 2:
        while True:
            pass
    time.sleep(600)
    """
)


def test_every_descendant_is_counted_with_its_memory_and_cpu(tmp_path: Path) -> None:
    script = tmp_path / "tree.py"
    script.write_text(TREE)
    root = subprocess.Popen([sys.executable, str(script), "0"])
    try:
        wait_until(lambda: len(family([root.pid])) == 3, timeout=30, what="the process tree")
        figures = measure([root.pid], seconds=1.0)
    finally:
        for process in family([root.pid])[::-1]:
            process.kill()
        root.wait(timeout=10)
    assert figures["processes"] == 3
    assert figures["rss_mb"] >= figures["pss_mb"] > 0
    # The grandchild spins on one core; parent and child sleep.
    assert 50 <= figures["cpu_percent_of_one_core"] <= 110
    assert sum(entry["processes"] for entry in figures["by_command"].values()) == 3
