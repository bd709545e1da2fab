"""The retraining loop in process: ingest, features, training and registry apps on a real valkey and a
real MLflow server. Idempotency, the gate and the registry commands, event by event."""

from __future__ import annotations

import contextlib

import httpx
import pytest
import redis.asyncio as aioredis
from mlflow.tracking import MlflowClient

from shared import events
from shared.bus import MeshBus
from shared.events import new_event
from shared.runtime.settings import MeshSettings
from tests.support.data import upload
from tests.support.servers import mesh
from tests.support.streams import count, stream_events

pytestmark = pytest.mark.integration

MODEL = "churn-demo"
LOOP = ("ingest", "features", "training", "registry")
TOKEN = "test-token"


@pytest.fixture
def loop_settings(settings: MeshSettings, mlflow_uri: str) -> MeshSettings:
    return settings.model_copy(update={"mlflow_tracking_uri": mlflow_uri, "registry_token": TOKEN})


@pytest.fixture
def mlflow_client(mlflow_uri: str) -> MlflowClient:
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    with contextlib.suppress(Exception):  # each test starts with no registered model
        client.delete_registered_model(MODEL)
    return client


@pytest.mark.timeout(600)
async def test_the_chain_promotes_then_rejects_and_redelivery_registers_nothing_twice(
    loop_settings: MeshSettings, redis_client: aioredis.Redis, mlflow_client: MlflowClient
) -> None:
    async with mesh(loop_settings, LOOP) as urls, httpx.AsyncClient(timeout=60) as client:
        ingested = await upload(client, urls["ingest"], rows=600, seed=1)
        [promoted] = await count(redis_client, events.MODEL_PROMOTED, 1)

        # One causal chain, every hop caused by the one before.
        [data] = await stream_events(redis_client, events.DATA_INGESTED)
        [features] = await stream_events(redis_client, events.FEATURES_READY)
        [trained] = await stream_events(redis_client, events.MODEL_TRAINED)
        assert data.event_id == ingested["event_id"]
        assert features.causation_id == data.event_id and trained.causation_id == features.event_id
        assert promoted.causation_id == trained.event_id
        assert {e.correlation_id for e in (data, features, trained, promoted)} == {data.correlation_id}
        assert promoted.payload.version == "1" and promoted.payload.previous_version is None
        assert features.payload.snapshot_ids == [ingested["snapshot_id"]]

        # Lineage on the MLflow run and the registered version.
        run = mlflow_client.get_run(trained.payload.run_id)
        assert run.data.tags["mesh.feature_set_id"] == features.payload.feature_set_id
        assert run.data.tags["mesh.trigger_event_id"] == features.event_id
        assert {i.dataset.name for i in run.inputs.dataset_inputs} == {features.payload.feature_set_id}
        assert run.data.metrics["roc_auc"] == pytest.approx(trained.payload.metrics["roc_auc"])
        champion = mlflow_client.get_model_version_by_alias(MODEL, "champion")
        assert champion.version == "1" and champion.run_id == run.info.run_id
        assert champion.tags["mesh.feature_set_id"] == features.payload.feature_set_id

        # The same model.trained again under a new event id (its done-marker lost, as after FLUSHALL):
        # the registry must reuse its recorded decision and version, not register a second one.
        publisher = MeshBus(loop_settings, "test-publisher")
        await publisher.broker.start()
        await publisher.publish(
            new_event(events.MODEL_TRAINED, trained.payload, cause=features, dedupe_key="again")
        )
        again = await count(redis_client, events.MODEL_PROMOTED, 2)
        assert again[1].payload.version == "1"
        assert len(mlflow_client.search_model_versions(f"name='{MODEL}'")) == 1

        # A label-shuffled batch trains a candidate the gate must reject; the champion stays.
        await upload(client, urls["ingest"], rows=3000, seed=3, label_noise=1.0)
        [rejected] = await count(redis_client, events.MODEL_REJECTED, 1)
        assert rejected.payload.reasons and any("roc_auc" in r for r in rejected.payload.reasons)
        assert rejected.payload.evidence["champion"]["version"] == "1"
        assert mlflow_client.get_model_version_by_alias(MODEL, "champion").version == "1"
        assert len(mlflow_client.search_model_versions(f"name='{MODEL}'")) == 1
        await publisher.stop()


@pytest.mark.timeout(600)
async def test_registry_commands_move_the_aliases_and_announce_it(
    loop_settings: MeshSettings, redis_client: aioredis.Redis, mlflow_client: MlflowClient
) -> None:
    async with mesh(loop_settings, LOOP) as urls, httpx.AsyncClient(timeout=60) as client:
        await upload(client, urls["ingest"], rows=600, seed=11)
        await count(redis_client, events.MODEL_PROMOTED, 1)
        await upload(client, urls["ingest"], rows=4000, seed=2)
        [_, second] = await count(redis_client, events.MODEL_PROMOTED, 2)
        assert second.payload.version == "2" and second.payload.previous_version == "1"
        evidence = second.payload.evidence
        assert (
            evidence["candidate"]["metrics"]["roc_auc"] >= evidence["champion"]["metrics"]["roc_auc"] + 0.005
        )

        registry = urls["registry"]
        denied = await client.post(f"{registry}/models/{MODEL}/rollback")
        assert denied.status_code == 401 and denied.json()["field"] == "authorization"
        auth = {"authorization": f"Bearer {TOKEN}"}
        rolled = await client.post(f"{registry}/models/{MODEL}/rollback", headers=auth)
        assert rolled.status_code == 200, rolled.text
        assert rolled.json()["version"] == "1" and rolled.json()["action"] == "rollback"
        assert mlflow_client.get_model_version_by_alias(MODEL, "champion").version == "1"
        assert mlflow_client.get_model_version_by_alias(MODEL, "previous").version == "2"
        announced = await count(redis_client, events.MODEL_PROMOTED, 3)
        assert announced[2].payload.action == "rollback" and announced[2].payload.version == "1"

        missing = await client.post(
            f"{registry}/models/{MODEL}/promote", json={"version": "99"}, headers=auth
        )
        assert missing.status_code == 404 and missing.json()["field"] == "version"
        malformed = await client.post(f"{registry}/models/{MODEL}/promote", json={"v": 2}, headers=auth)
        assert malformed.status_code == 422 and malformed.json()["field"] == "version"
        forward = await client.post(f"{registry}/models/{MODEL}/promote", json={"version": "2"}, headers=auth)
        assert forward.status_code == 200 and forward.json()["version"] == "2"
        described = (await client.get(f"{registry}/models/{MODEL}")).json()
        assert described["champion"]["version"] == "2" and described["previous"]["version"] == "1"
