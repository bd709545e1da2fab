"""From the trigger policy's retrain decision to ``retrain.requested``: straight away when no labelled live
rows wait, else after those rows went through ingest as a snapshot of their own. The monitor's consumers
are called as the bus would call them, with a real bus on a real Redis-compatible server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import redis.asyncio as aioredis
from mlflow.tracking import MlflowClient
from opentelemetry import trace

from services.monitor import consumers
from services.monitor.decisions import PENDING_KEY
from services.monitor.deps import DriftEpisode, MonitorDeps
from services.monitor.policy import MonitorConfig, load_monitor_config
from services.monitor.references import Reference
from services.monitor.windows import Monitor
from shared import events
from shared.bus import MeshBus
from shared.events import (
    DataIngested,
    Envelope,
    LabelObserved,
    PredictionMade,
    RetrainRequested,
    new_event,
    utcnow,
)
from shared.ml.datasets import DatasetSchema
from shared.ml.feature_sets import reference_profile, split_mask
from shared.ml.features import FeatureSpec
from shared.ops.demo_data import generate
from shared.runtime.logging import get_logger
from shared.runtime.settings import MeshSettings
from tests.support.data import CONFIG_DIR
from tests.support.streams import stream_events

pytestmark = pytest.mark.integration  # a real Redis-compatible server; no app, no MLflow

MODEL = "churn-demo"  # the model deploy/config/monitor/demo.yaml watches
VERSION = "1"
LABELLED = 40  # predictions labelled in the feedback case, above the lowered minimums below


@pytest.fixture(scope="module")
def profile(schema: DatasetSchema, spec: FeatureSpec) -> dict[str, Any]:
    """The reference profile of the demo's train split, built as build_feature_set builds profile.json."""
    raw = generate(rows=3000, seed=0)
    return reference_profile(raw.filter(~split_mask(raw, spec)), schema, spec.input_columns)


@pytest.fixture
async def bus(settings: MeshSettings, redis_client: aioredis.Redis) -> AsyncIterator[MeshBus]:
    bus = MeshBus(settings, "monitor")
    await bus.start()
    yield bus
    await bus.stop()


def _deps(
    settings: MeshSettings,
    bus: MeshBus,
    config: MonitorConfig,
    spec: FeatureSpec,
    schema: DatasetSchema,
    profile: dict[str, Any],
) -> MonitorDeps:
    monitor = Monitor(config, spec, schema)
    # The version's reference is already known, so the MLflow client is never asked for it.
    monitor.set_reference(Reference(VERSION, profile, promoted_accuracy=0.9, feature_set_id="fs"))
    uri = settings.effective_mlflow_uri
    return MonitorDeps(
        settings=settings,
        bus=bus,
        tracer=trace.get_tracer("test"),
        log=get_logger("mesh.monitor"),
        monitor=monitor,
        mlflow=MlflowClient(tracking_uri=uri, registry_uri=uri),
        episode=DriftEpisode(),
    )


def _predictions(frame: pl.DataFrame, spec: FeatureSpec) -> list[Envelope[PredictionMade]]:
    return [
        new_event(
            events.PREDICTIONS,
            PredictionMade(
                request_id=f"req-{i}",
                model_name=MODEL,
                model_version=VERSION,
                features=row,
                prediction=i % 2,
                predicted_at=utcnow(),
            ),
        )
        for i, row in enumerate(frame.select(spec.input_columns).iter_rows(named=True))
    ]


def _wrong_labels(predictions: list[Envelope[PredictionMade]]) -> list[Envelope[LabelObserved]]:
    """Every prediction labelled with the other class: accuracy 0, far below the promoted 0.9."""
    return [
        new_event(
            events.LABELS,
            LabelObserved(
                request_id=p.payload.request_id, label=1 - p.payload.prediction, observed_at=utcnow()
            ),
        )
        for p in predictions
    ]


async def _pending(redis_client: aioredis.Redis, ingest_event_id: str) -> RetrainRequested | None:
    """The retrain remembered for the ``ingest.requested`` with that event id, if any."""
    stored = await redis_client.hget(PENDING_KEY, ingest_event_id)
    return None if stored is None else RetrainRequested.model_validate_json(stored)


async def test_labelled_rows_go_through_ingest_before_the_retrain_is_requested_once(
    settings: MeshSettings,
    bus: MeshBus,
    redis_client: aioredis.Redis,
    spec: FeatureSpec,
    schema: DatasetSchema,
    profile: dict[str, Any],
) -> None:
    demo = load_monitor_config(CONFIG_DIR, "demo")
    config = demo.model_copy(
        update={
            "performance": demo.performance.model_copy(update={"min_labels": LABELLED // 2}),
            "retrain": demo.retrain.model_copy(update={"min_labelled_rows": LABELLED // 2}),
        }
    )
    deps = _deps(settings, bus, config, spec, schema, profile)
    predictions = _predictions(generate(rows=LABELLED, seed=1), spec)
    labels = _wrong_labels(predictions)

    await consumers.on_predictions(deps, predictions)
    await consumers.on_labels(deps, labels)

    [detected] = await stream_events(redis_client, events.DRIFT_DETECTED)
    assert detected.payload.fired == ["performance:accuracy"]
    [ingest] = await stream_events(redis_client, events.INGEST_REQUESTED)
    assert ingest.payload.dataset == "demo" and ingest.payload.trigger_training is False
    assert ingest.causation_id == detected.event_id
    feedback = pl.read_parquet(ingest.payload.uri)
    assert feedback.height == LABELLED and feedback.columns == schema.column_names
    assert Path(ingest.payload.uri).is_relative_to(settings.effective_data_root / "feedback" / "demo")
    assert deps.monitor.feedback.is_empty()
    assert not await stream_events(redis_client, events.RETRAIN_REQUESTED)
    assert await redis_client.hlen(PENDING_KEY) == 1
    retrain = await _pending(redis_client, ingest.event_id)
    assert retrain is not None
    assert retrain.dataset == "demo" and retrain.reason == "performance:accuracy"
    assert retrain.evidence["episode_event_id"] == detected.event_id

    # A snapshot the monitor did not ask for leaves the retrain waiting.
    unrelated = DataIngested(
        dataset="demo", snapshot_id="other", path="/elsewhere", row_count=10, schema_hash="h"
    )
    await consumers.on_data_ingested(deps, new_event(events.DATA_INGESTED, unrelated))
    assert not await stream_events(redis_client, events.RETRAIN_REQUESTED)

    stored = unrelated.model_copy(update={"snapshot_id": "feedback", "trigger_training": False})
    ingested = new_event(events.DATA_INGESTED, stored, cause=ingest)
    await consumers.on_data_ingested(deps, ingested)
    [requested] = await stream_events(redis_client, events.RETRAIN_REQUESTED)
    assert requested.payload == retrain
    assert requested.causation_id == ingested.event_id
    assert requested.correlation_id == labels[-1].correlation_id
    assert await _pending(redis_client, ingest.event_id) is None

    # Redelivered, the snapshot's announcement asks for nothing more: the retrain was forgotten.
    await consumers.on_data_ingested(deps, ingested)
    assert len(await stream_events(redis_client, events.RETRAIN_REQUESTED)) == 1


async def test_without_labelled_rows_the_retrain_is_requested_directly(
    settings: MeshSettings,
    bus: MeshBus,
    redis_client: aioredis.Redis,
    spec: FeatureSpec,
    schema: DatasetSchema,
    profile: dict[str, Any],
) -> None:
    demo = load_monitor_config(CONFIG_DIR, "demo")
    config = demo.model_copy(
        update={
            "window": demo.window.model_copy(update={"size": 200, "min_size": 200}),
            "retrain": demo.retrain.model_copy(update={"min_labelled_rows": 0}),
        }
    )
    deps = _deps(settings, bus, config, spec, schema, profile)

    await consumers.on_predictions(deps, _predictions(generate(rows=200, seed=2, covariate_shift=1.0), spec))

    [detected] = await stream_events(redis_client, events.DRIFT_DETECTED)
    assert detected.payload.fired and all(t.startswith(("psi:", "ks:")) for t in detected.payload.fired)
    [requested] = await stream_events(redis_client, events.RETRAIN_REQUESTED)
    assert requested.causation_id == detected.event_id
    assert requested.payload.reason == "; ".join(detected.payload.fired)
    assert requested.payload.window_snapshots == config.retrain.window_snapshots
    assert not await stream_events(redis_client, events.INGEST_REQUESTED)
    assert not await redis_client.exists(PENDING_KEY)
