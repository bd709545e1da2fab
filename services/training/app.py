"""Training service wiring: ``features.ready`` and ``retrain.requested`` in, ``model.trained`` out."""

from __future__ import annotations

import asyncio
from typing import Any

import mlflow
from starlette.applications import Starlette

from services.training.handlers import TrainedRun, latest_window, train
from shared import events
from shared.bus import PermanentError
from shared.events import Envelope, ModelTrained
from shared.ml.feature_sets import FeatureSetManifest, require_manifest
from shared.ml.modeling import load_model_config
from shared.runtime.service import ServiceRuntime
from shared.runtime.settings import MeshSettings


def create_app(settings: MeshSettings | None = None) -> Starlette:
    runtime = ServiceRuntime("training", settings)
    settings = runtime.settings

    @runtime.on_startup
    async def connect_mlflow() -> None:
        mlflow.set_tracking_uri(settings.effective_mlflow_uri)

    async def train_and_announce(event: Envelope[Any], dataset: str, manifest: FeatureSetManifest) -> None:
        try:
            config = load_model_config(settings.config_dir, dataset)
        except FileNotFoundError as exc:
            raise PermanentError(str(exc)) from exc
        attributes = {"mesh.dataset": dataset, "mesh.feature_set_id": manifest.feature_set_id}
        with runtime.tracer.start_as_current_span("training.train", attributes=attributes) as span:
            run: TrainedRun = await asyncio.to_thread(
                train,
                manifest,
                config,
                trigger_type=event.type,
                trigger_event_id=event.event_id,
                correlation_id=event.correlation_id,
            )
            span.set_attribute("mesh.run_id", run.run_id)
        payload = ModelTrained(
            dataset=dataset,
            model_name=config.model_name,
            run_id=run.run_id,
            model_uri=run.model_uri,
            metrics=run.metrics,
            feature_set_id=manifest.feature_set_id,
            snapshot_ids=manifest.snapshot_ids,
            params=run.params,
        )
        await runtime.bus.emit(events.MODEL_TRAINED, payload, cause=event)
        runtime.log.info("model trained", run_id=run.run_id, metrics=run.metrics, model=config.model_name)

    async def on_features_ready(event: Envelope[Any]) -> None:
        try:
            manifest = require_manifest(
                settings.effective_data_root, event.payload.dataset, event.payload.feature_set_id
            )
        except FileNotFoundError as exc:
            raise PermanentError(str(exc)) from exc
        await train_and_announce(event, event.payload.dataset, manifest)

    async def on_retrain_requested(event: Envelope[Any]) -> None:
        request = event.payload
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
        runtime.log.info("retraining", dataset=request.dataset, reason=request.reason)
        await train_and_announce(event, request.dataset, manifest)

    runtime.require_http("mlflow", f"{settings.effective_mlflow_uri}/health")
    runtime.bus.consume(events.FEATURES_READY, on_features_ready)
    runtime.bus.consume(events.RETRAIN_REQUESTED, on_retrain_requested)
    return runtime.asgi()
