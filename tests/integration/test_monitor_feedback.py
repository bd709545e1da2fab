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

from services.monitor import consumers
from services.monitor.deps import MonitorDeps
from services.monitor.evaluation import PENDING_KEY
from services.monitor.policy import DRIFT_METHODS, SIGNIFICANCE
from services.monitor.state import ModelKeys
from shared import events
from shared.bus import MeshBus
from shared.bus.delivery import dead_letter
from shared.events import DataIngested, RetrainRequested, new_event
from shared.ml.datasets import DatasetSchema
from shared.ml.feature_sets import reference_profile, split_mask
from shared.ml.features import FeatureSpec
from shared.ops.demo_data import generate
from shared.runtime.settings import MeshSettings
from tests.support.monitor import MODEL, labels, monitor_config, monitor_deps, predictions, tuned_config_dir
from tests.support.streams import stream_events

pytestmark = pytest.mark.integration  # a real Redis-compatible server; no app, no MLflow

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


def feedback_deps(
    settings: MeshSettings, bus: MeshBus, profile: dict[str, Any], tmp_path: Path
) -> MonitorDeps:
    """A monitor whose decay check and retrain take the LABELLED rows of one test: their labels go
    through ingest as a feedback batch before the retrain."""
    config_dir = tuned_config_dir(
        tmp_path, performance={"min_labels": LABELLED // 2}, retrain={"min_labelled_rows": LABELLED // 2}
    )
    return monitor_deps(settings, bus, config_dir, profile)


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
    tmp_path: Path,
) -> None:
    deps = feedback_deps(settings, bus, profile, tmp_path)
    predicted = predictions(generate(rows=LABELLED, seed=1), spec)
    wrong = labels(predicted, wrong=True)

    await consumers.on_predictions(deps, predicted)
    await consumers.on_labels(deps, wrong)

    [detected] = await stream_events(redis_client, events.DRIFT_DETECTED)
    assert detected.payload.fired == ["performance:accuracy"]
    [ingest] = await stream_events(redis_client, events.INGEST_REQUESTED)
    assert ingest.payload.dataset == "demo" and ingest.payload.trigger_training is False
    assert ingest.causation_id == detected.event_id
    feedback = pl.read_parquet(ingest.payload.uri)
    assert feedback.height == LABELLED and feedback.columns == schema.column_names
    assert Path(ingest.payload.uri).is_relative_to(settings.effective_data_root / "feedback" / "demo")
    assert await redis_client.llen(ModelKeys(MODEL).feedback) == 0
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
    assert requested.correlation_id == wrong[-1].correlation_id
    assert await _pending(redis_client, ingest.event_id) is None

    # Redelivered, the snapshot's announcement asks for nothing more: the retrain was forgotten.
    await consumers.on_data_ingested(deps, ingested)
    assert len(await stream_events(redis_client, events.RETRAIN_REQUESTED)) == 1


async def test_a_feedback_batch_ingest_refuses_releases_its_retrain_saying_why(
    settings: MeshSettings,
    bus: MeshBus,
    redis_client: aioredis.Redis,
    spec: FeatureSpec,
    profile: dict[str, Any],
    tmp_path: Path,
) -> None:
    deps = feedback_deps(settings, bus, profile, tmp_path)
    predicted = predictions(generate(rows=LABELLED, seed=2), spec)
    await consumers.on_predictions(deps, predicted)
    await consumers.on_labels(deps, labels(predicted, wrong=True))
    [ingest] = await stream_events(redis_client, events.INGEST_REQUESTED)
    waiting = await _pending(redis_client, ingest.event_id)
    assert waiting is not None

    # Letters of other streams, and of requests the monitor did not make, release nothing.
    unrelated = [
        dead_letter(events.LABELS, "monitor", "1-0", b"{", None, "invalid event: x", 1),
        dead_letter(events.INGEST_REQUESTED, "ingest", "2-0", b"{}", predicted[0], "not ours", 1),
    ]
    await consumers.on_dead_letters(deps, unrelated)
    assert not await stream_events(redis_client, events.RETRAIN_REQUESTED)

    refused = dead_letter(
        events.INGEST_REQUESTED, "ingest", "3-0", ingest.model_dump_json(), ingest, "rows fail the schema", 1
    )
    await consumers.on_dead_letters(deps, [refused])
    [requested] = await stream_events(redis_client, events.RETRAIN_REQUESTED)
    assert requested.payload.dataset == "demo" and requested.causation_id == refused.event_id
    assert requested.payload.reason == f"{waiting.reason}; without its feedback batch, which ingest refused"
    assert requested.payload.evidence["feedback_refused"] == "rows fail the schema"
    assert await _pending(redis_client, ingest.event_id) is None

    await consumers.on_dead_letters(deps, [refused])  # redelivered: the retrain was asked for once
    assert len(await stream_events(redis_client, events.RETRAIN_REQUESTED)) == 1


async def test_without_labelled_rows_the_retrain_is_requested_directly(
    settings: MeshSettings,
    bus: MeshBus,
    redis_client: aioredis.Redis,
    spec: FeatureSpec,
    profile: dict[str, Any],
    tmp_path: Path,
) -> None:
    config_dir = tuned_config_dir(
        tmp_path, window={"size": 200, "min_size": 200}, retrain={"min_labelled_rows": 0}
    )
    config = monitor_config(config_dir)
    deps = monitor_deps(settings, bus, config_dir, profile)

    await consumers.on_predictions(deps, predictions(generate(rows=200, seed=2, covariate_shift=1.0), spec))

    [detected] = await stream_events(redis_client, events.DRIFT_DETECTED)
    drift_tests = tuple(f"{method}:" for method in (*DRIFT_METHODS, SIGNIFICANCE))
    assert detected.payload.fired and all(t.startswith(drift_tests) for t in detected.payload.fired)
    [requested] = await stream_events(redis_client, events.RETRAIN_REQUESTED)
    assert requested.causation_id == detected.event_id
    assert requested.payload.reason == "; ".join(detected.payload.fired)
    assert requested.payload.window_snapshots == config.retrain.window_snapshots
    assert not await stream_events(redis_client, events.INGEST_REQUESTED)
    assert not await redis_client.exists(PENDING_KEY)
