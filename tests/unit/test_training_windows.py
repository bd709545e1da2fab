"""What a retrain request trains on: a feature set over the dataset's most recent committed snapshots."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.training.windows import latest_window
from shared.ml.datasets import DatasetSchema
from shared.ml.features import FeatureSpec
from shared.ml.snapshots import SnapshotStore
from shared.ops.demo_data import generate
from tests.support.data import CONFIG_DIR, commit_snapshot


@pytest.fixture
def data_root(tmp_path: Path, schema: DatasetSchema) -> Path:
    """Seven committed demo snapshots, s1 (oldest) to s7."""
    store = SnapshotStore(tmp_path)
    for day in range(1, 8):
        commit_snapshot(store, schema, f"s{day}", generate(rows=200, seed=day), day)
    return tmp_path


def test_a_requested_window_takes_that_many_latest_snapshots(data_root: Path) -> None:
    manifest = latest_window(CONFIG_DIR, data_root, "demo", 2)
    assert manifest.dataset == "demo"
    assert manifest.snapshot_ids == ["s6", "s7"]
    assert manifest.train_rows + manifest.holdout_rows == 400


def test_without_a_requested_window_the_feature_spec_decides(data_root: Path, spec: FeatureSpec) -> None:
    assert spec.window.last_snapshots == 5
    manifest = latest_window(CONFIG_DIR, data_root, "demo", None)
    assert manifest.snapshot_ids == ["s3", "s4", "s5", "s6", "s7"]


def test_the_same_window_twice_is_the_same_feature_set(data_root: Path) -> None:
    first = latest_window(CONFIG_DIR, data_root, "demo", 3)
    assert latest_window(CONFIG_DIR, data_root, "demo", 3).feature_set_id == first.feature_set_id


def test_a_dataset_without_snapshots_cannot_be_retrained(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no snapshots"):
        latest_window(CONFIG_DIR, tmp_path, "demo", None)
