"""The data tests feed in: the demo dataset's config, small valid batches, committed snapshots."""

from __future__ import annotations

from typing import Any

import polars as pl

from shared.ml.datasets import DatasetSchema, as_datetimes
from shared.ml.snapshots import SnapshotManifest, SnapshotStore
from shared.ops.demo_data import generate
from shared.runtime.settings import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "deploy" / "config"


def commit_snapshot(
    store: SnapshotStore, schema: DatasetSchema, snapshot_id: str, frame: Any, day: int = 1
) -> SnapshotManifest:
    """Store ``frame`` as a committed snapshot of ``schema``'s dataset (the demo's in most tests), as
    ingest would."""
    # Times written as text are read as ingest reads them.
    texts = [
        c.name for c in schema.columns if c.dtype == "datetime" and frame.schema.get(c.name) == pl.String
    ]
    frame = frame.with_columns(as_datetimes(frame[c]) for c in texts)
    path = store.write_data(schema.name, snapshot_id, frame)
    manifest = SnapshotManifest(
        dataset=schema.name,
        snapshot_id=snapshot_id,
        path=str(path),
        row_count=frame.height,
        schema_hash=schema.schema_hash,
        source="test",
        created_at=f"2026-01-{day:02d}T00:00:00+00:00",
        event_id=f"event-{snapshot_id}",
    )
    store.commit(manifest)
    return manifest


DEMO_HEADER = (
    "customer_id,event_time,age,income,tenure_months,monthly_spend,support_calls,"
    "last_login_days,region,plan,churned"
)


def demo_csv(rows: int = 5, *, seed: int = 0) -> bytes:
    """A small valid batch of the demo dataset, distinct per ``seed``."""
    lines = [DEMO_HEADER]
    for i in range(rows):
        lines.append(
            f"s{seed}-c{i},2026-01-01T00:{i % 60:02d}:00Z,{20 + (seed + i) % 60},{30000 + 17 * seed + i},"
            f"{i % 100},{50.5 + i},{i % 4},{1.5 * i},{['north', 'south', 'east', 'west'][i % 4]},"
            f"{['basic', 'plus', 'premium'][i % 3]},{i % 2}"
        )
    return ("\n".join(lines) + "\n").encode()


async def upload(client: Any, url: str, **knobs: Any) -> dict[str, Any]:
    """Upload a generated demo batch (shared.ops.demo_data knobs) to an ingest service."""
    response = await client.post(
        f"{url}/datasets/demo/batches",
        content=generate(**knobs).write_csv().encode(),
        headers={"content-type": "text/csv"},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body
