"""Where benchmark results go: one JSON file per run under bench/results/, with what ran them."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What a figure was measured on."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def commit() -> str:
    """The checked-out commit, short; "unknown" outside a git work tree."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=RESULTS_DIR.parent,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Writes ``<name>-<UTC time>.json`` with the machine and commit beside the figures; returns it."""
    now = datetime.now(UTC)
    document = {
        "benchmark": name,
        "at": now.isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
        **result,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}-{now:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
