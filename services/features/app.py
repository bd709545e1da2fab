"""Features service wiring: ``data.ingested`` in, ``features.ready`` out."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.applications import Starlette

from services.features.handlers import build_for_ingested, features_ready, has_feature_spec
from shared import events
from shared.bus import PermanentError
from shared.events import DataIngested, Envelope
from shared.ml.datasets import UnknownDataset
from shared.runtime.service import ServiceRuntime
from shared.runtime.settings import MeshSettings


def create_app(settings: MeshSettings | None = None) -> Starlette:
    runtime = ServiceRuntime("features", settings)
    settings = runtime.settings

    async def on_data_ingested(event: Envelope[Any]) -> None:
        ingested: DataIngested = event.payload
        if not ingested.trigger_training:
            runtime.log.info("snapshot stored without a training trigger", snapshot_id=ingested.snapshot_id)
            return
        if not has_feature_spec(settings.config_dir, ingested.dataset):
            runtime.log.info("no feature spec for dataset; nothing to build", dataset=ingested.dataset)
            return
        attributes = {"mesh.dataset": ingested.dataset, "mesh.snapshot_id": ingested.snapshot_id}
        with runtime.tracer.start_as_current_span("features.build", attributes=attributes) as span:
            try:
                manifest = await asyncio.to_thread(
                    build_for_ingested, settings.config_dir, settings.effective_data_root, ingested
                )
            except (UnknownDataset, FileNotFoundError, ValueError) as exc:
                raise PermanentError(f"cannot build features: {exc}") from exc
            span.set_attribute("mesh.feature_set_id", manifest.feature_set_id)
        await runtime.bus.emit(
            events.FEATURES_READY, features_ready(manifest), cause=event, dedupe_key=manifest.feature_set_id
        )
        runtime.log.info(
            "features ready",
            dataset=ingested.dataset,
            feature_set_id=manifest.feature_set_id,
            snapshots=len(manifest.snapshot_ids),
            train_rows=manifest.train_rows,
            holdout_rows=manifest.holdout_rows,
        )

    runtime.bus.consume(events.DATA_INGESTED, on_data_ingested)
    return runtime.asgi()
