"""Serving's prediction sampler over a real Redis-compatible server: what reaches ``predictions``."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest
import redis.asyncio as aioredis

from services.serving.holder import LoadedModel
from services.serving.metrics import PREDICTIONS_DROPPED
from services.serving.sampler import PredictionSampler, new_request_ids
from shared import events
from shared.bus import MeshBus
from shared.ml.tasks import Outputs
from shared.runtime.settings import MeshSettings
from tests.support.serving import loaded_model_stub
from tests.support.streams import count, stream_events

pytestmark = pytest.mark.integration


def _loaded() -> LoadedModel:
    return loaded_model_stub(version="7", columns=["age", "region"])


def _answer(rows: int) -> tuple[pl.DataFrame, Outputs, list[str]]:
    frame = pl.DataFrame({"age": list(range(20, 20 + rows)), "region": ["north"] * rows})
    scores = np.linspace(0.1, 0.9, rows)
    outputs = Outputs("binary", (scores >= 0.5).astype(int), np.column_stack([1 - scores, scores]), [0, 1])
    return frame, outputs, new_request_ids(rows)


async def test_every_answered_record_is_published_with_its_model_and_features(
    settings: MeshSettings, redis_client: aioredis.Redis
) -> None:
    bus = MeshBus(settings, "serving")
    sampler = PredictionSampler(bus, rate=1.0, batch=4)
    await sampler.start()
    answers = [_answer(rows) for rows in (1, 5, 3)]
    for frame, outputs, ids in answers:
        sampler.offer(_loaded(), frame, outputs, ids)
    envelopes = await count(redis_client, events.PREDICTIONS, 9)
    await sampler.stop()
    await bus.stop()

    by_request = {e.payload.request_id: e.payload for e in envelopes}
    assert len(by_request) == 9
    for frame, outputs, ids in answers:
        predictions, scores = outputs.predictions, outputs.positive_scores
        assert scores is not None
        for i, row in enumerate(frame.iter_rows(named=True)):
            record = by_request[ids[i]]
            assert (record.model_name, record.model_version) == ("churn-demo", "7")
            assert record.features == row
            assert record.prediction == predictions[i]
            assert record.probability == pytest.approx(scores[i])


async def test_stop_flushes_what_is_still_queued(
    settings: MeshSettings, redis_client: aioredis.Redis
) -> None:
    bus = MeshBus(settings, "serving")
    sampler = PredictionSampler(bus, rate=1.0, batch=2)  # never started: everything is still queued
    for _ in range(5):
        sampler.offer(_loaded(), *_answer(3))
    await sampler.stop()
    await bus.stop()
    assert len(await stream_events(redis_client, events.PREDICTIONS)) == 15


async def test_past_capacity_answers_are_dropped_and_counted_not_queued(
    settings: MeshSettings, redis_client: aioredis.Redis
) -> None:
    bus = MeshBus(settings, "serving")
    sampler = PredictionSampler(bus, rate=1.0, capacity=4)
    dropped_before = PREDICTIONS_DROPPED._value.get()
    offered: list[Any] = [_answer(3), _answer(2), _answer(1)]  # 3 fit; 3+2 do not; 3+1 do
    for answer in offered:
        sampler.offer(_loaded(), *answer)
    assert PREDICTIONS_DROPPED._value.get() - dropped_before == 2
    await sampler.stop()
    await bus.stop()
    published = {e.payload.request_id for e in await stream_events(redis_client, events.PREDICTIONS)}
    assert published == set(offered[0][2]) | set(offered[2][2])


async def test_a_zero_rate_publishes_nothing(settings: MeshSettings, redis_client: aioredis.Redis) -> None:
    bus = MeshBus(settings, "serving")
    sampler = PredictionSampler(bus, rate=0.0)
    sampler.offer(_loaded(), *_answer(10))
    await sampler.stop()
    await bus.stop()
    assert await redis_client.xlen(events.PREDICTIONS) == 0
