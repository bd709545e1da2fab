"""The fault and hostile-input suite (``make test-chaos``): the whole stack as processes, driven hard.

Each scenario adds its figures to one report, written as JSON to ``tests/reports/chaos.json`` when the
session ends (``MESH_CHAOS_REPORT`` to put it elsewhere): what was sent, handled, redelivered,
dead-lettered, lost and duplicated, so a run that passes still says by how much."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.ops.demo_data import cancer, generate
from shared.ops.driver import MeshDriver
from shared.runtime.settings import REPO_ROOT
from tests.support.faults import CANCER, CHURN, fault_stack

REPORT = Path(os.environ.get("MESH_CHAOS_REPORT", REPO_ROOT / "tests" / "reports" / "chaos.json"))


@pytest.fixture(scope="session")
def chaos_report() -> Iterator[dict[str, Any]]:
    """Scenario name -> its figures; written out after the last scenario, passed or failed."""
    scenarios: dict[str, Any] = {}
    yield scenarios
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    report = {"written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine}
    REPORT.write_text(json.dumps({**report, "scenarios": scenarios}, indent=2, default=str) + "\n")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshDriver]:
    """One stack for the fault scenarios, one after another (a stack takes a minute to start), with both
    demo models serving their first version. Short reclaim timings: see ``FAST_RECLAIM``."""
    with fault_stack(tmp_path_factory.mktemp("faults")) as driver:
        driver.upload(generate(rows=600, seed=1))
        driver.upload(cancer(rows=400, seed=1), dataset="cancer")
        driver.wait_for_version("1", CHURN)
        driver.wait_for_version("1", CANCER)
        yield driver
