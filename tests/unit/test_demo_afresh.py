"""A second `make demo` starts from a fresh local stack: what the first one left is removed (its batches
would be duplicates and nothing would train), the registry token is kept; external services are left
alone, and `--keep` keeps everything."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from shared.ops.demo import DEMO_STATE, start_afresh
from shared.runtime.settings import MeshSettings


def _state(root: Path) -> Path:
    state = root / "state"
    for name in DEMO_STATE:
        if name.endswith(".jsonl"):
            (state / name).parent.mkdir(parents=True, exist_ok=True)
            (state / name).write_text("{}\n")
        else:
            (state / name / "inside").mkdir(parents=True)
    (state / "registry-token").write_text("t0ken")
    return state


def test_a_previous_demos_state_is_removed_and_the_token_kept(tmp_path: Path) -> None:
    state = _state(tmp_path)
    start_afresh(MeshSettings(state_dir=state, redis_url=None, mlflow_tracking_uri=None), Console(quiet=True))
    assert [p.name for p in state.iterdir()] == ["registry-token"]


def test_nothing_is_removed_before_a_first_demo_or_with_external_services(tmp_path: Path) -> None:
    state = _state(tmp_path)
    external = MeshSettings(state_dir=state, redis_url="redis://127.0.0.1:1/0", mlflow_tracking_uri=None)
    start_afresh(external, Console(quiet=True))
    assert (state / "data" / "inside").is_dir() and (state / "demo").is_dir()

    (state / "demo" / "inside").rmdir()
    (state / "demo").rmdir()  # no demo ran here
    start_afresh(MeshSettings(state_dir=state, redis_url=None, mlflow_tracking_uri=None), Console(quiet=True))
    assert (state / "data" / "inside").is_dir()
