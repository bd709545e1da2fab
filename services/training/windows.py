"""Which snapshots a retrain request trains on: a fresh feature set over the most recent ones."""

from __future__ import annotations

from pathlib import Path

from shared.ml.datasets import load_schema
from shared.ml.feature_sets import FeatureSetManifest, build_feature_set, window
from shared.ml.features import load_feature_spec
from shared.ml.snapshots import SnapshotStore


def latest_window(config_dir: Path, data_root: Path, dataset: str, last: int | None) -> FeatureSetManifest:
    """A fresh feature set over the dataset's ``last`` snapshots (default: the feature spec's window)."""
    schema = load_schema(config_dir, dataset)
    spec = load_feature_spec(config_dir, dataset)
    committed = SnapshotStore(data_root).list(dataset)
    if not committed:
        raise FileNotFoundError(f"dataset {dataset!r} has no snapshots to train on")
    return build_feature_set(
        data_root, schema, spec, window(committed, None, last or spec.window.last_snapshots)
    )
