"""The drift loop in process, on a real valkey and MLflow server: live predictions and late labels into
the monitor; drift episodes, the trigger policy, the feedback snapshot, the retrain and the gate."""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
import mlflow
import polars as pl
import pytest
import redis.asyncio as aioredis
from mlflow.tracking import MlflowClient

from shared import events
from shared.events import LabelObserved, PredictionMade, new_event, utcnow
from shared.ops.demo_data import generate
from shared.runtime.retry import wait_for
from shared.runtime.settings import MeshSettings
from tests.support.data import upload
from tests.support.servers import mesh
from tests.support.streams import count, stream_events

pytestmark = pytest.mark.integration

MODEL = "churn-demo"
SERVICES = ("ingest", "features", "training", "registry", "monitor")


class Traffic:
    """Plays serving and the ground-truth system: the real champion's predictions, then labels."""

    def __init__(self, redis_client: aioredis.Redis, model: Any, version: str, columns: list[str]) -> None:
        self.redis, self.model, self.version, self.columns = redis_client, model, version, columns
        self.sent = 0

    async def predictions(self, frame: pl.DataFrame) -> list[str]:
        records = frame.select(self.columns)
        scores = self.model.predict_proba(records)[:, 1]
        pipe = self.redis.pipeline(transaction=False)
        ids = []
        for row, score in zip(records.iter_rows(named=True), scores, strict=True):
            self.sent += 1
            request_id = f"req-{self.sent}"
            ids.append(request_id)
            record = PredictionMade(
                request_id=request_id,
                model_name=MODEL,
                model_version=self.version,
                features=row,
                prediction=int(score >= 0.5),
                probability=float(score),
                predicted_at=utcnow(),
            )
            pipe.xadd(
                events.PREDICTIONS, {"__data__": new_event(events.PREDICTIONS, record).model_dump_json()}
            )
        await pipe.execute()
        return ids

    async def labels(self, request_ids: list[str], labels: list[int]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for request_id, label in zip(request_ids, labels, strict=True):
            event = new_event(
                events.LABELS, LabelObserved(request_id=request_id, label=label, observed_at=utcnow())
            )
            pipe.xadd(events.LABELS, {"__data__": event.model_dump_json()})
        await pipe.execute()


async def drift_state(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get(f"{url}/drift/{MODEL}")).json()
    return body


@pytest.mark.timeout(600)
async def test_drift_holds_without_labels_then_retrains_once_on_labelled_decay(
    settings: MeshSettings, mlflow_uri: str, redis_client: aioredis.Redis
) -> None:
    client_ml = MlflowClient(mlflow_uri, mlflow_uri)
    with contextlib.suppress(Exception):
        client_ml.delete_registered_model(MODEL)
    loop_settings = settings.model_copy(update={"mlflow_tracking_uri": mlflow_uri})
    async with mesh(loop_settings, SERVICES) as urls, httpx.AsyncClient(timeout=60) as http:
        await upload(http, urls["ingest"], rows=600, seed=31)
        await count(redis_client, events.MODEL_PROMOTED, 1)
        mlflow.set_tracking_uri(mlflow_uri)
        champion = mlflow.sklearn.load_model(f"models:/{MODEL}/1")
        columns = champion.named_steps["features"].pipeline["spec"]["features"]
        inputs = [c for c in generate(rows=1).columns if any(c in str(f.values()) for f in columns)]
        traffic = Traffic(redis_client, champion, "1", inputs)
        monitor = urls["monitor"]

        async def windows(n: int) -> dict[str, Any] | None:
            state = await drift_state(http, monitor)
            return state if state["windows"] >= n else None

        # Reference traffic: two windows, nothing fires.
        await traffic.predictions(generate(rows=1000, seed=20))
        state = await wait_for(lambda: windows(2), timeout=60, what="two reference windows")
        assert not await stream_events(redis_client, events.DRIFT_DETECTED)
        assert state["latest"]["decision"]["retrain"] is False
        assert state["references"] == ["1"]

        # Covariate shift, no labels: one drift episode, announced once; the retrain waits for labels.
        await traffic.predictions(generate(rows=1500, seed=21, covariate_shift=1.0))
        await wait_for(lambda: windows(5), timeout=60, what="three shifted windows")
        [detected] = await stream_events(redis_client, events.DRIFT_DETECTED)
        assert detected.payload.model_version == "1" and detected.payload.fired
        assert any(test.startswith(("psi:", "ks:")) for test in detected.payload.fired)
        state = await drift_state(http, monitor)
        assert state["latest"]["decision"]["retrain"] is False
        assert any("labelled rows" in reason for reason in state["latest"]["decision"]["reasons"])
        # A burst of further drifted windows is the same episode: no second announcement, no retrain.
        await traffic.predictions(generate(rows=1500, seed=22, covariate_shift=1.0))
        await wait_for(lambda: windows(8), timeout=60, what="a burst of shifted windows")
        assert len(await stream_events(redis_client, events.DRIFT_DETECTED)) == 1
        assert not await stream_events(redis_client, events.RETRAIN_REQUESTED)

        report = await http.get(f"{monitor}/drift/{MODEL}/report")
        assert report.status_code == 200 and report.text.count("data:image/png;base64,") >= 2

        # The world's rule changes (inputs as before) and labels arrive: accuracy decays, one retrain.
        features_before = len(await stream_events(redis_client, events.FEATURES_READY))
        shifted = generate(rows=1200, seed=23, concept_shift=1.0)
        ids = await traffic.predictions(shifted)
        await traffic.labels(ids, shifted["churned"].to_list())
        [retrain] = await count(redis_client, events.RETRAIN_REQUESTED, 1)
        assert retrain.payload.window_snapshots == 1
        assert any(test.startswith("performance:") for test in retrain.payload.evidence["decision"]["fired"])
        promoted = await count(redis_client, events.MODEL_PROMOTED, 2)
        assert promoted[1].payload.version == "2"
        assert promoted[1].correlation_id == retrain.correlation_id

        # The new model learned from the labelled live rows, stored as a snapshot of their own...
        [feedback] = promoted[1].payload.snapshot_ids
        ingested = {e.payload.snapshot_id: e for e in await stream_events(redis_client, events.DATA_INGESTED)}
        assert ingested[feedback].payload.trigger_training is False
        # The retrain fires as soon as the policy's minimum of labelled rows is there, not when all arrived.
        assert 1000 <= ingested[feedback].payload.row_count <= 1200
        # ...which did not also start the ordinary data-driven training.
        assert len(await stream_events(redis_client, events.FEATURES_READY)) == features_before
        evidence = promoted[1].payload.evidence
        assert evidence["candidate"]["metrics"]["roc_auc"] > evidence["champion"]["metrics"]["roc_auc"]
        assert len(await stream_events(redis_client, events.RETRAIN_REQUESTED)) == 1
