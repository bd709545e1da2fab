"""Feature sets: the training frame of a dataset over a window of its snapshots.

``<data_root>/features/<dataset>/<feature_set_id>/`` holds
``train.parquet`` (features + target), ``holdout.parquet`` (raw inputs + target: the gate scores every
model on raw rows through its own pipeline), ``pipeline.json`` (spec, schema and fitted state),
``profile.json`` (the reference distribution the drift monitor compares live traffic with) and
``manifest.json`` (written last: a feature set without it is incomplete).

The id is a hash of the snapshot ids, the spec and the schema: the same inputs always give the same
feature set, so rebuilding after a redelivery overwrites nothing and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel

from shared.events import utcnow
from shared.ml.datasets import DatasetSchema
from shared.ml.features import FeaturePipeline, FeatureSpec
from shared.ml.snapshots import SnapshotManifest, atomic_write

PROFILE_BINS = 10
SPLIT_BUCKETS = 10_000


class FeatureSetManifest(BaseModel):
    dataset: str
    feature_set_id: str
    snapshot_ids: list[str]
    spec_hash: str
    schema_hash: str
    target: str
    train_rows: int
    holdout_rows: int
    created_at: str
    directory: str

    @property
    def dir(self) -> Path:
        return Path(self.directory)

    @property
    def train_path(self) -> Path:
        return self.dir / "train.parquet"

    @property
    def holdout_path(self) -> Path:
        return self.dir / "holdout.parquet"

    @property
    def pipeline_path(self) -> Path:
        return self.dir / "pipeline.json"

    @property
    def profile_path(self) -> Path:
        return self.dir / "profile.json"


def feature_set_id(dataset: str, snapshot_ids: list[str], spec: FeatureSpec, schema: DatasetSchema) -> str:
    digest = hashlib.sha256(
        json.dumps([dataset, sorted(snapshot_ids), spec.spec_hash, schema.schema_hash]).encode()
    ).hexdigest()
    return digest[:24]


def feature_set_dir(data_root: Path, dataset: str, fs_id: str) -> Path:
    return data_root / "features" / dataset / fs_id


def load_manifest(data_root: Path, dataset: str, fs_id: str) -> FeatureSetManifest | None:
    path = feature_set_dir(data_root, dataset, fs_id) / "manifest.json"
    return FeatureSetManifest.model_validate_json(path.read_text()) if path.is_file() else None


def require_manifest(data_root: Path, dataset: str, fs_id: str) -> FeatureSetManifest:
    """The manifest of a feature set an event names; FileNotFoundError if it is not on the data root."""
    manifest = load_manifest(data_root, dataset, fs_id)
    if manifest is None:
        raise FileNotFoundError(f"feature set {fs_id} of {dataset!r} is not on the data root")
    return manifest


def split_mask(frame: pl.DataFrame | pl.LazyFrame, spec: FeatureSpec) -> pl.Expr:
    """True for holdout rows: a seeded hash of the row id, so a row keeps its side as the window grows."""
    bucket = pl.col(spec.id_column).hash(seed=spec.split.seed) % SPLIT_BUCKETS
    return bucket < int(spec.split.holdout_fraction * SPLIT_BUCKETS)


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def bin_shares(values: np.ndarray, edges: list[float]) -> list[float]:
    """Share of ``values`` in each bin ``(-inf, e0), [e0, e1), ..., [e_last, inf)`` (the drift bins)."""
    counts = np.bincount(np.searchsorted(np.asarray(edges), values, side="right"), minlength=len(edges) + 1)
    return (counts / max(len(values), 1)).tolist()


def reference_profile(frame: pl.DataFrame, schema: DatasetSchema, columns: list[str]) -> dict[str, Any]:
    """Per input column: quantile bins and their shares (numeric) or category shares (categorical)."""
    profile: dict[str, Any] = {"rows": frame.height, "columns": {}}
    for name in columns:
        col = schema.column(name)
        series = frame[name]
        null_share = series.null_count() / max(frame.height, 1)
        present = series.drop_nulls()
        if col.dtype in ("int", "float"):
            values = present.cast(pl.Float64)
            quantiles = [float(values.quantile(q / PROFILE_BINS) or 0.0) for q in range(1, PROFILE_BINS)]
            edges = sorted(set(quantiles))
            shares = bin_shares(values.to_numpy(), edges)
            profile["columns"][name] = {
                "kind": "numeric",
                "edges": edges,
                "shares": shares,
                "null_share": null_share,
                "mean": _number(values.mean()),
                "std": _number(values.std()),
                "sample": values.sample(min(values.len(), 500), seed=0).sort().to_list(),
            }
        else:
            counts = dict(present.cast(pl.String).value_counts().iter_rows())
            total = max(present.len(), 1)
            categories = col.allowed or sorted(counts)
            profile["columns"][name] = {
                "kind": "categorical",
                "shares": {c: counts.get(c, 0) / total for c in categories},
                "null_share": null_share,
            }
    return profile


def build_feature_set(
    data_root: Path,
    schema: DatasetSchema,
    spec: FeatureSpec,
    snapshots: list[SnapshotManifest],
) -> FeatureSetManifest:
    """Build (or find) the feature set of ``snapshots``: split, fit on train, transform, profile."""
    snapshot_ids = [s.snapshot_id for s in snapshots]
    fs_id = feature_set_id(schema.name, snapshot_ids, spec, schema)
    if (existing := load_manifest(data_root, schema.name, fs_id)) is not None:
        return existing

    raw = pl.concat([pl.scan_parquet(s.path) for s in snapshots], how="vertical").collect()
    holdout_mask = split_mask(raw, spec)
    train_raw = raw.filter(~holdout_mask)
    holdout_raw = raw.filter(holdout_mask)
    if train_raw.height == 0 or holdout_raw.height == 0:
        empty = "train" if train_raw.height == 0 else "holdout"
        raise ValueError(f"window of {raw.height} rows leaves an empty {empty} split")

    pipeline = FeaturePipeline(spec, schema).fit(train_raw)
    train = pipeline.transform(train_raw).with_columns(train_raw[spec.target].alias(spec.target))
    keep = [spec.id_column, *spec.input_columns, spec.target]
    profile = reference_profile(train_raw, schema, spec.input_columns)

    directory = feature_set_dir(data_root, schema.name, fs_id)
    atomic_write(directory / "train.parquet", lambda tmp: train.write_parquet(tmp))
    atomic_write(directory / "holdout.parquet", lambda tmp: holdout_raw.select(keep).write_parquet(tmp))
    atomic_write(directory / "pipeline.json", lambda tmp: tmp.write_text(json.dumps(pipeline.to_dict())))
    atomic_write(directory / "profile.json", lambda tmp: tmp.write_text(json.dumps(profile)))
    manifest = FeatureSetManifest(
        dataset=schema.name,
        feature_set_id=fs_id,
        snapshot_ids=snapshot_ids,
        spec_hash=spec.spec_hash,
        schema_hash=schema.schema_hash,
        target=spec.target,
        train_rows=train.height,
        holdout_rows=holdout_raw.height,
        created_at=utcnow().isoformat(),
        directory=str(directory.resolve()),
    )
    atomic_write(directory / "manifest.json", lambda tmp: tmp.write_text(manifest.model_dump_json(indent=2)))
    return manifest


def window(
    committed: list[SnapshotManifest], trigger: SnapshotManifest | None, last_snapshots: int
) -> list[SnapshotManifest]:
    """The last ``last_snapshots`` snapshots, always including the one that triggered the build.

    The trigger comes from the event, not the listing: ingest announces a snapshot before it commits
    the manifest, so the listing may not show it yet.
    """
    ordered = [s for s in committed if trigger is None or s.snapshot_id != trigger.snapshot_id]
    if trigger is not None:
        ordered.append(trigger)
    return ordered[-last_snapshots:]
