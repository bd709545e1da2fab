"""The monitor's state in Redis: labels join their predictions whichever arrives first, every labelled
request counts once however often either is redelivered, and windows fill per model version."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from services.monitor.state import ModelKeys, MonitorStore
from shared.events import PredictionMade, utcnow
from shared.ops.demo_data import EXAMPLE_RECORD

pytestmark = pytest.mark.integration  # a real Redis-compatible server

CAPACITY = 1_000


def _predictions(ids: range, model: str = "a", version: str = "1") -> list[dict[str, object]]:
    return [
        PredictionMade(
            request_id=f"{model}-r{i}",
            model_name=model,
            model_version=version,
            features=EXAMPLE_RECORD,
            prediction=i % 2,
            predicted_at=utcnow(),
        ).model_dump(mode="json")
        for i in ids
    ]


def _labels(ids: range, model: str = "a") -> list[tuple[str, object]]:
    return [(f"{model}-r{i}", i % 2) for i in ids]


async def _labelled(redis_client: aioredis.Redis, model: str = "a") -> list[str]:
    rows = await redis_client.lrange(ModelKeys(model).labelled, 0, -1)
    return [json.loads(row)["record"]["request_id"] for row in rows]


async def test_labels_join_their_predictions_whichever_arrives_first(redis_client: aioredis.Redis) -> None:
    store = MonitorStore(lambda: redis_client)
    assert await store.add_labels(_labels(range(0, 5)), CAPACITY) == {}  # before their predictions
    await store.add_predictions(_predictions(range(0, 10)), 0.0, CAPACITY)
    assert await store.add_labels(_labels(range(5, 8)), CAPACITY) == {"a": 3}
    assert sorted(await _labelled(redis_client)) == sorted(f"a-r{i}" for i in range(8))
    assert await redis_client.hlen("mesh:monitor:unmatched") == 0
    assert await store.labelled_since("a") == 8
    assert await store.labelled_versions("a", 100) == ["1"]


async def test_a_redelivered_label_or_prediction_is_counted_once(redis_client: aioredis.Redis) -> None:
    store = MonitorStore(lambda: redis_client)
    await store.add_predictions(_predictions(range(10)), 0.0, CAPACITY)
    await store.add_predictions(_predictions(range(6)), 1.0, CAPACITY)
    await store.add_labels(_labels(range(10)), CAPACITY)
    await store.add_labels(_labels(range(4)), CAPACITY)
    await store.add_predictions(_predictions(range(4)), 2.0, CAPACITY)  # after its label was joined
    assert len(await _labelled(redis_client)) == 10
    assert await redis_client.llen(ModelKeys("a").feedback) == 10
    assert await redis_client.hlen("mesh:monitor:unmatched") == 0
    assert await store.open_windows("a") == {"1": (10, 0.0)}


async def test_windows_fill_per_model_and_version_and_labels_find_their_model(
    redis_client: aioredis.Redis,
) -> None:
    store = MonitorStore(lambda: redis_client)
    batch = (
        _predictions(range(3), "a", "1") + _predictions(range(3, 7), "a", "2") + _predictions(range(5), "b")
    )
    assert await store.add_predictions(batch, 5.0, CAPACITY) == {("a", "1"): 3, ("a", "2"): 4, ("b", "1"): 5}
    assert await store.open_windows("a") == {"1": (3, 5.0), "2": (4, 5.0)}
    assert await store.open_windows("b") == {"1": (5, 5.0)}
    joined = await store.add_labels(_labels(range(2), "a") + _labels(range(5), "b"), CAPACITY)
    assert joined == {"a": 2, "b": 5}
    again = await store.add_predictions(batch[:2] + _predictions(range(5, 7), "b"), 6.0, CAPACITY)
    assert again == {("b", "1"): 7}  # repeats go to no window


async def test_the_join_buffer_is_bounded(redis_client: aioredis.Redis) -> None:
    store = MonitorStore(lambda: redis_client)
    await store.add_predictions(_predictions(range(50)), 0.0, 20)
    assert await redis_client.hlen("mesh:monitor:joins") == 20
    await store.add_labels(_labels(range(50)), 20)  # the 30 oldest are gone: their labels wait, bounded
    assert len(await _labelled(redis_client)) == 20
    assert await redis_client.hlen("mesh:monitor:unmatched") == 20
