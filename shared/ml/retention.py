"""Pruning what the mesh keeps by age: snapshots and feature sets on the data root, traces in MLflow.

Never pruned, whatever their age: what a registered model version references (its ``mesh.snapshot_ids``
and ``mesh.feature_set_id`` tags: a model must trace back to the data that made it, and a rollback or
the gate may need its feature set), and each dataset's newest snapshots a training window takes (its
feature spec's ``window.last_snapshots``, or the monitor's ``retrain.window_snapshots`` if larger), so a
retrain always has data. A snapshot goes manifest first, so a listing never names a file already gone.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.ml.config_files import InvalidConfig
from shared.ml.feature_sets import FeatureSetManifest
from shared.ml.features import load_feature_spec
from shared.ml.monitoring import load_monitor_config
from shared.ml.snapshots import SnapshotStore

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


@dataclass
class Pruned:
    """What a pruning pass deleted (or, dry, would delete) and what it kept although old, and why."""

    snapshots: list[str] = field(default_factory=list)  # "dataset/snapshot_id"
    feature_sets: list[str] = field(default_factory=list)  # "dataset/feature_set_id"
    traces: int = 0
    kept_referenced: list[str] = field(default_factory=list)  # old, but a registered version needs it
    kept_in_window: list[str] = field(default_factory=list)  # old, but among the newest a retrain takes

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def referenced(client: MlflowClient) -> tuple[set[str], set[str]]:
    """("dataset/snapshot_id", "dataset/feature_set_id") every registered version of every model names."""
    snapshots: set[str] = set()
    feature_sets: set[str] = set()
    page_token = None
    while True:
        page = client.search_model_versions(max_results=1000, page_token=page_token)
        for version in page:
            tags = version.tags or {}
            dataset = tags.get("mesh.dataset")
            if not dataset:
                continue
            snapshots.update(f"{dataset}/{s}" for s in json.loads(tags.get("mesh.snapshot_ids", "[]")))
            if tags.get("mesh.feature_set_id"):
                feature_sets.add(f"{dataset}/{tags['mesh.feature_set_id']}")
        page_token = page.token
        if not page_token:
            return snapshots, feature_sets


def window_size(config_dir: Path, dataset: str) -> int:
    """How many of a dataset's newest snapshots a training window may take. A dataset no longer declared
    keeps its newest one: nothing will train on it, but its history should not vanish to the last file.
    One whose configuration cannot be read now keeps all: its window is unknown."""
    try:
        size = load_feature_spec(config_dir, dataset).window.last_snapshots
    except FileNotFoundError:
        return 1
    except InvalidConfig:
        return sys.maxsize
    try:
        return max(size, load_monitor_config(config_dir, dataset).retrain.window_snapshots)
    except FileNotFoundError:
        return size
    except InvalidConfig:
        return sys.maxsize


def _older(created_at: str, before: datetime) -> bool:
    return datetime.fromisoformat(created_at) < before


def prune(
    data_root: Path,
    config_dir: Path,
    client: MlflowClient,
    *,
    before: datetime,
    trace_experiment: str,
    dry_run: bool = False,
) -> Pruned:
    """Delete snapshots, feature sets and traces created before ``before`` that nothing needs (see the
    module's docstring); with ``dry_run``, only say what would go."""
    snapshots_needed, feature_sets_needed = referenced(client)
    pruned = Pruned()
    store = SnapshotStore(data_root)
    datasets = sorted(p.name for p in (data_root / "datasets").glob("*") if p.is_dir())
    for dataset in datasets:
        listed = store.list(dataset)
        newest = {m.snapshot_id for m in listed[-window_size(config_dir, dataset) :]}
        for manifest in listed:
            key = f"{dataset}/{manifest.snapshot_id}"
            if not _older(manifest.created_at, before):
                continue
            if key in snapshots_needed:
                pruned.kept_referenced.append(key)
            elif manifest.snapshot_id in newest:
                pruned.kept_in_window.append(key)
            else:
                pruned.snapshots.append(key)
                if not dry_run:
                    store.delete(dataset, manifest.snapshot_id)
    for manifest_path in sorted((data_root / "features").glob("*/*/manifest.json")):
        feature_set = FeatureSetManifest.model_validate_json(manifest_path.read_text())
        key = f"{feature_set.dataset}/{feature_set.feature_set_id}"
        if not _older(feature_set.created_at, before):
            continue
        if key in feature_sets_needed:
            pruned.kept_referenced.append(key)
            continue
        pruned.feature_sets.append(key)
        if not dry_run:
            manifest_path.unlink()  # first: a half-deleted feature set is one no listing names
            shutil.rmtree(manifest_path.parent, ignore_errors=True)
    experiment = client.get_experiment_by_name(trace_experiment)
    if experiment is not None and not dry_run:
        pruned.traces = client.delete_traces(
            experiment.experiment_id, max_timestamp_millis=int(before.timestamp() * 1000)
        )
    return pruned
