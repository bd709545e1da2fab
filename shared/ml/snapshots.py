"""Immutable, content-addressed dataset snapshots on the data root, shared by ingest (writer) and
features (reader): ``<root>/datasets/<name>/snapshots/<id>.parquet`` plus its ``<id>.json`` manifest.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl
from pydantic import BaseModel


class SnapshotManifest(BaseModel):
    dataset: str
    snapshot_id: str
    path: str
    row_count: int
    schema_hash: str
    source: str
    created_at: str
    event_id: str
    announced: bool = True


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SnapshotStore:
    """``<root>/datasets/<name>/snapshots/<id>.parquet`` plus ``<id>.json``; the manifest commits it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, dataset: str) -> Path:
        return self.root / "datasets" / dataset / "snapshots"

    def parquet_path(self, dataset: str, snapshot_id: str) -> Path:
        return self._dir(dataset) / f"{snapshot_id}.parquet"

    def manifest(self, dataset: str, snapshot_id: str) -> SnapshotManifest | None:
        path = self._dir(dataset) / f"{snapshot_id}.json"
        if not path.is_file():
            return None
        return SnapshotManifest.model_validate_json(path.read_text())

    def list(self, dataset: str) -> list[SnapshotManifest]:
        manifests = [
            SnapshotManifest.model_validate_json(p.read_text()) for p in self._dir(dataset).glob("*.json")
        ]
        return sorted(manifests, key=lambda m: (m.created_at, m.snapshot_id))

    def write_data(self, dataset: str, snapshot_id: str, frame: pl.DataFrame) -> Path:
        path = self.parquet_path(dataset, snapshot_id)
        if not path.exists():  # same id => same content: an existing file is already right
            atomic_write(path, lambda tmp: frame.write_parquet(tmp, compression="zstd", statistics=True))
        return path

    def commit(self, manifest: SnapshotManifest) -> None:
        path = self._dir(manifest.dataset) / f"{manifest.snapshot_id}.json"
        atomic_write(path, lambda tmp: tmp.write_text(manifest.model_dump_json(indent=2)))

    def delete(self, dataset: str, snapshot_id: str) -> None:
        """The manifest first: a listing never names a snapshot whose file is already gone."""
        (self._dir(dataset) / f"{snapshot_id}.json").unlink(missing_ok=True)
        self.parquet_path(dataset, snapshot_id).unlink(missing_ok=True)
