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
# Reference values a numeric column's profile keeps for KS and Wasserstein: all of them up to this many,
# else this many evenly spaced order statistics. Their ECDF is then within 1/(2 * PROFILE_SAMPLE) of the
# whole column's, so KS compares a window with the whole reference and its noise keeps shrinking as the
# window grows (against a random sample of 500 values it never fell below ~0.09 at alpha 1e-3, more than
# a 0.2 sd mean shift moves it), while profile.json stays at ~200 KB per numeric column.
PROFILE_SAMPLE = 10_000
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
    """True for holdout rows: a seeded hash of the row id, so a row keeps its side as the window grows.

    Without an id column, of the row's content (its inputs and target) and, for the second and later
    copies of the same content, which copy it is: otherwise every copy of a row would fall on one side,
    and a dataset of few distinct rows (only categories, say) could hold out a single class."""
    if spec.id_column:
        key = pl.col(spec.id_column).hash(seed=spec.split.seed)
    else:
        content = pl.struct([*spec.input_columns, spec.target]).hash(seed=spec.split.seed)
        # The copy number by ranks (ties ranked in order of occurrence): a window over the content takes
        # 8x longer on a million rows.
        copy = content.rank("ordinal") - content.rank("min")
        copies = pl.struct(content.alias("content"), copy.alias("copy")).hash(seed=spec.split.seed)
        key = pl.when(copy == 0).then(content).otherwise(copies)
    return key % SPLIT_BUCKETS < int(spec.split.holdout_fraction * SPLIT_BUCKETS)


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def bin_shares(values: np.ndarray, edges: list[float]) -> list[float]:
    """Share of ``values`` in each bin ``(-inf, e0), [e0, e1), ..., [e_last, inf)`` (the drift bins)."""
    counts = np.bincount(np.searchsorted(np.asarray(edges), values, side="right"), minlength=len(edges) + 1)
    return (counts / max(len(values), 1)).tolist()


def reference_profile(frame: pl.DataFrame, schema: DatasetSchema, columns: list[str]) -> dict[str, Any]:
    """Per input column: quantile bins and their shares (numeric) or category shares (categorical).

    Not datetime columns: live traffic's times are later than training's by nature, so their drift says
    nothing; what a model reads of them (hour, weekday, ...) is watched through its outputs' drift."""
    profile: dict[str, Any] = {"rows": frame.height, "columns": {}}
    for name in columns:
        col = schema.column(name)
        if col.dtype == "datetime":
            continue
        profile["columns"][name] = column_profile(
            frame[name], numeric=col.dtype in ("int", "float"), categories=col.allowed
        )
    return profile


def reference_sample(values: np.ndarray, size: int = PROFILE_SAMPLE) -> list[float]:
    """``values`` sorted when there are at most ``size`` of them; else ``size`` evenly spaced order
    statistics, the ``i``-th at rank ``floor((i + 1/2) n / size)``: values of the column itself (ties
    and integers stay exact), each standing for ``n / size`` of them."""
    ordered = np.sort(values)
    n = ordered.size
    if n <= size:
        return ordered.tolist()
    ranks = ((2 * np.arange(size, dtype=np.int64) + 1) * n) // (2 * size)
    return ordered[ranks].tolist()


def column_profile(
    series: pl.Series, *, numeric: bool, categories: list[str] | None = None
) -> dict[str, Any]:
    """One column's reference: quantile bins and their shares, moments and the reference sample with how
    many present values it stands for (numeric), or category shares (categorical)."""
    null_share = series.null_count() / max(series.len(), 1)
    present = series.drop_nulls()
    if numeric:
        values = present.cast(pl.Float64)
        quantiles = [float(values.quantile(q / PROFILE_BINS) or 0.0) for q in range(1, PROFILE_BINS)]
        edges = sorted(set(quantiles))
        array = values.to_numpy()
        return {
            "kind": "numeric",
            "edges": edges,
            "shares": bin_shares(array, edges),
            "null_share": null_share,
            "mean": _number(values.mean()),
            "std": _number(values.std()),
            "sample": reference_sample(array),
            "sample_rows": values.len(),
        }
    counts = dict(present.cast(pl.String).value_counts().iter_rows())
    total = max(present.len(), 1)
    return {
        "kind": "categorical",
        "shares": {c: counts.get(c, 0) / total for c in categories or sorted(counts)},
        "null_share": null_share,
    }


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
    keep = [*([spec.id_column] if spec.id_column else []), *spec.input_columns, spec.target]
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
