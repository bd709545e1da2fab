"""The training service's consumers: a feature set or a retrain request in, ``model.trained`` out."""

from __future__ import annotations

import asyncio
from typing import Any

from services.training.deps import TrainingDeps
from services.training.trainer import announcement, train
from services.training.windows import latest_window
from shared import events
from shared.bus import PermanentError
from shared.events import Envelope, FeaturesReady, RetrainRequested
from shared.ml.config_files import InvalidConfig
from shared.ml.estimators import UnreviewedTypes
from shared.ml.feature_sets import FeatureSetManifest, require_manifest
from shared.ml.modeling import TrainingDataError, load_model_config


async def on_features_ready(deps: TrainingDeps, event: Envelope[FeaturesReady]) -> None:
    ready = event.payload
    try:
        manifest = require_manifest(deps.settings.effective_data_root, ready.dataset, ready.feature_set_id)
    except FileNotFoundError as exc:
        raise PermanentError(str(exc)) from exc
    await train_and_announce(deps, event, ready.dataset, manifest)


async def on_retrain_requested(deps: TrainingDeps, event: Envelope[RetrainRequested]) -> None:
    request = event.payload
    settings = deps.settings
    try:
        manifest = await asyncio.to_thread(
            latest_window,
            settings.config_dir,
            settings.effective_data_root,
            request.dataset,
            request.window_snapshots,
        )
    except (FileNotFoundError, ValueError) as exc:
        raise PermanentError(f"cannot retrain {request.dataset!r}: {exc}") from exc
    deps.log.info("retraining", dataset=request.dataset, reason=request.reason)
    await train_and_announce(deps, event, request.dataset, manifest)


async def train_and_announce(
    deps: TrainingDeps, event: Envelope[Any], dataset: str, manifest: FeatureSetManifest
) -> None:
    """Train the dataset's configured model on ``manifest`` and announce the run, caused by ``event``."""
    try:
        config = load_model_config(deps.settings.config_dir, dataset)
    except (FileNotFoundError, InvalidConfig) as exc:
        raise PermanentError(str(exc)) from exc
    attributes = {"mesh.dataset": dataset, "mesh.feature_set_id": manifest.feature_set_id}
    with deps.tracer.start_as_current_span("training.train", attributes=attributes) as span:
        try:
            run = await asyncio.to_thread(
                train,
                deps.mlflow,
                manifest,
                config,
                trigger_type=event.type,
                trigger_event_id=event.event_id,
                correlation_id=event.correlation_id,
            )
        except (TrainingDataError, UnreviewedTypes) as exc:  # the same data fails the same way every time
            raise PermanentError(f"cannot train {config.model_name!r}: {exc}") from exc
        span.set_attribute("mesh.run_id", run.run_id)
    payload = announcement(config, manifest, run)
    await deps.bus.emit(events.MODEL_TRAINED, payload, cause=event)
    deps.log.info("model trained", run_id=run.run_id, metrics=run.metrics, model=config.model_name)
