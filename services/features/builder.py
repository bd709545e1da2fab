"""Building a feature set: from a newly ingested snapshot to the feature set of its dataset's window."""

from __future__ import annotations

from pathlib import Path

from shared.events import DataIngested, FeaturesReady
from shared.ml.datasets import load_schema
from shared.ml.feature_sets import FeatureSetManifest, build_feature_set, window
from shared.ml.features import load_feature_spec
from shared.ml.snapshots import SnapshotManifest, SnapshotStore


def has_feature_spec(config_dir: Path, dataset: str) -> bool:
    return (config_dir / "features" / f"{dataset}.yaml").is_file()


def build_for_ingested(config_dir: Path, data_root: Path, ingested: DataIngested) -> FeatureSetManifest:
    """The feature set over the dataset's last N snapshots, the newly ingested one included."""
    schema = load_schema(config_dir, ingested.dataset)
    spec = load_feature_spec(config_dir, ingested.dataset)
    trigger = SnapshotManifest(
        dataset=ingested.dataset,
        snapshot_id=ingested.snapshot_id,
        path=ingested.path,
        row_count=ingested.row_count,
        schema_hash=ingested.schema_hash,
        source="data.ingested",
        created_at="",
        event_id="",
    )
    snapshots = window(SnapshotStore(data_root).list(ingested.dataset), trigger, spec.window.last_snapshots)
    return build_feature_set(data_root, schema, spec, snapshots)


def features_ready(manifest: FeatureSetManifest) -> FeaturesReady:
    return FeaturesReady(
        dataset=manifest.dataset,
        feature_set_id=manifest.feature_set_id,
        path=manifest.directory,
        train_path=str(manifest.train_path),
        holdout_path=str(manifest.holdout_path),
        profile_path=str(manifest.profile_path),
        snapshot_ids=manifest.snapshot_ids,
        spec_hash=manifest.spec_hash,
        target=manifest.target,
        row_count=manifest.train_rows + manifest.holdout_rows,
    )
