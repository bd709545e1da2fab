"""Adaptive batching of single-record predictions (services/serving/batching.py), with the demo model
trained as the training service trains it: concurrent records are scored together, and each is answered,
or refused, exactly as it would have been alone."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from services.serving.batching import RecordBatcher
from services.serving.holder import LoadedModel
from services.serving.metrics import BATCHED_RECORDS
from services.serving.predictions import answer
from services.serving.records import RecordError, record_model
from services.serving.sampler import PredictionSampler
from shared.bus import MeshBus
from shared.ml.datasets import DatasetSchema
from shared.ml.feature_sets import build_feature_set
from shared.ml.features import FeatureSpec
from shared.ml.modeling import load_model_config
from shared.ml.snapshots import SnapshotStore
from shared.ops.demo_data import generate
from shared.runtime.settings import MeshSettings
from tests.support.data import CONFIG_DIR, commit_snapshot
from tests.support.models import train_offline
from tests.support.serving import loaded_model_stub

MODEL = "churn-demo"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, schema: DatasetSchema, spec: FeatureSpec) -> LoadedModel:
    root: Path = tmp_path_factory.mktemp("batching")
    store = SnapshotStore(root)
    snapshot = commit_snapshot(store, schema, "s1", generate(rows=800, seed=1), 1)
    manifest = build_feature_set(root, schema, spec, [snapshot])
    trained = train_offline(manifest, load_model_config(CONFIG_DIR, "demo"))
    record = record_model(schema, spec.input_columns)
    return loaded_model_stub(model=trained.model, record=record, columns=spec.input_columns, schema=schema)


@pytest.fixture
def sampler() -> PredictionSampler:
    return PredictionSampler(MeshBus(MeshSettings(), "serving"), rate=0.0)  # answers are not published


def records(spec: FeatureSpec, count: int) -> list[dict[str, Any]]:
    frame: pl.DataFrame = generate(rows=count, seed=7).select(spec.input_columns)
    return frame.to_dicts()


def without_id(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "request_id"}


def batches_observed() -> float:
    return sum(s.value for s in BATCHED_RECORDS.collect()[0].samples if s.name.endswith("_count"))


async def test_concurrent_records_are_scored_together_each_answered_as_alone(
    loaded: LoadedModel, sampler: PredictionSampler, spec: FeatureSpec
) -> None:
    batcher = RecordBatcher(sampler, max_records=16)
    given = records(spec, 50)
    batches_before = batches_observed()
    try:
        results = await asyncio.gather(*(batcher.answer(loaded, record) for record in given))
    finally:
        batcher.stop()
    alone = [answer(loaded, sampler, [record], "features")[0] for record in given]
    assert [without_id(r) for r in results] == [without_id(r) for r in alone]
    assert len({r["request_id"] for r in results}) == 50
    # 50 records waiting at once: scored in batches of at most 16.
    assert batches_observed() - batches_before == 4


async def test_a_bad_record_is_refused_alone_naming_its_field(
    loaded: LoadedModel, sampler: PredictionSampler, spec: FeatureSpec
) -> None:
    batcher = RecordBatcher(sampler, max_records=64)
    good = records(spec, 6)
    bad = {**good[3], "age": "old"}
    try:
        outcomes = await asyncio.gather(
            *(batcher.answer(loaded, r) for r in [*good[:3], bad, "not a record", *good[3:]]),
            return_exceptions=True,
        )
    finally:
        batcher.stop()
    refusals = [o for o in outcomes if isinstance(o, BaseException)]
    assert [type(o) for o in refusals] == [RecordError, RecordError]
    assert [o.field for o in refusals if isinstance(o, RecordError)] == ["features.age", "features"]
    answered = [o for o in outcomes if isinstance(o, dict)]
    expected = [answer(loaded, sampler, [r], "features")[0] for r in good]
    assert [without_id(r) for r in answered] == [without_id(r) for r in expected]


async def test_a_batch_spanning_a_swap_scores_each_record_with_the_version_it_read(
    loaded: LoadedModel, sampler: PredictionSampler, spec: FeatureSpec
) -> None:
    # A version whose model cannot predict: its records fail, the other version's in the same batch do not.
    broken = dataclasses.replace(loaded, version="4", model=None)
    batcher = RecordBatcher(sampler, max_records=64)
    given = records(spec, 8)
    try:
        outcomes = await asyncio.gather(
            *(batcher.answer(loaded if i % 2 else broken, r) for i, r in enumerate(given)),
            return_exceptions=True,
        )
    finally:
        batcher.stop()
    assert [isinstance(o, dict) for o in outcomes] == [i % 2 == 1 for i in range(8)]
    assert all(isinstance(o, AttributeError) for o in outcomes[::2])


async def test_a_cancelled_request_does_not_stop_the_others(
    loaded: LoadedModel, sampler: PredictionSampler, spec: FeatureSpec
) -> None:
    batcher = RecordBatcher(sampler, max_records=64)
    given = records(spec, 5)
    try:
        tasks = [asyncio.create_task(batcher.answer(loaded, r)) for r in given]
        await asyncio.sleep(0)  # all five are waiting for the first batch to be scored
        tasks[2].cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        batcher.stop()
    assert isinstance(outcomes[2], asyncio.CancelledError)
    assert all(isinstance(o, dict) for i, o in enumerate(outcomes) if i != 2)
