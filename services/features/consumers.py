"""The features service's consumers: a stored snapshot in, the feature set of its dataset's window out."""

from __future__ import annotations

import asyncio

from services.features.builder import build_for_ingested, features_ready, has_feature_spec
from services.features.deps import FeaturesDeps
from shared import events
from shared.bus import PermanentError
from shared.events import DataIngested, Envelope
from shared.ml.datasets import UnknownDataset


async def on_data_ingested(deps: FeaturesDeps, event: Envelope[DataIngested]) -> None:
    ingested = event.payload
    settings = deps.settings
    if not ingested.trigger_training:
        deps.log.info("snapshot stored without a training trigger", snapshot_id=ingested.snapshot_id)
        return
    if not has_feature_spec(settings.config_dir, ingested.dataset):
        deps.log.info("no feature spec for dataset; nothing to build", dataset=ingested.dataset)
        return
    attributes = {"mesh.dataset": ingested.dataset, "mesh.snapshot_id": ingested.snapshot_id}
    with deps.tracer.start_as_current_span("features.build", attributes=attributes) as span:
        try:
            manifest = await asyncio.to_thread(
                build_for_ingested, settings.config_dir, settings.effective_data_root, ingested
            )
        except (UnknownDataset, FileNotFoundError, ValueError) as exc:
            raise PermanentError(f"cannot build features: {exc}") from exc
        span.set_attribute("mesh.feature_set_id", manifest.feature_set_id)
    await deps.bus.emit(
        events.FEATURES_READY, features_ready(manifest), cause=event, dedupe_key=manifest.feature_set_id
    )
    deps.log.info(
        "features ready",
        dataset=ingested.dataset,
        feature_set_id=manifest.feature_set_id,
        snapshots=len(manifest.snapshot_ids),
        train_rows=manifest.train_rows,
        holdout_rows=manifest.holdout_rows,
    )
