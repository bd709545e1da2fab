"""What the ingest service's consumers and routes are handed."""

from __future__ import annotations

import dataclasses
from typing import Any

from shared import events
from shared.events import DataIngested, Envelope
from shared.ml.snapshots import SnapshotStore
from shared.runtime.service import ServiceDeps


@dataclasses.dataclass(frozen=True)
class IngestDeps(ServiceDeps):
    """Settings, bus, tracer and logger, and the snapshot store every accepted batch is written to."""

    store: SnapshotStore

    async def announce(self, payload: DataIngested, cause: Envelope[Any] | None) -> Envelope[Any]:
        """``data.ingested`` for a stored snapshot; announcing the same snapshot again is the same event."""
        return await self.bus.emit(events.DATA_INGESTED, payload, cause=cause, dedupe_key=payload.snapshot_id)

    async def config_problem(self) -> str | None:
        """Readiness: without the dataset declarations no batch can be validated."""
        datasets = self.settings.config_dir / "datasets"
        return None if datasets.is_dir() else f"config: {datasets} does not exist"
