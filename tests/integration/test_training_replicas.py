"""Two training replicas (``mesh run training`` processes) share the ``features.ready`` work through their
consumer group: every feature set is trained exactly once, and both replicas take part."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from mlflow.tracking import MlflowClient

from shared import events
from shared.ops.embedded import free_port
from shared.runtime.retry import wait_until
from shared.runtime.settings import MeshSettings
from tests.support.data import upload
from tests.support.processes import kill_all_with_env
from tests.support.servers import mesh
from tests.support.streams import count, stream_events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BATCHES = 4


@pytest.fixture
def loop_settings(settings: MeshSettings, mlflow_uri: str) -> MeshSettings:
    return settings.model_copy(update={"mlflow_tracking_uri": mlflow_uri})


@pytest.fixture
def trainers(loop_settings: MeshSettings, tmp_path: Path) -> Iterator[list[Path]]:
    """Two training processes on the test's Redis, MLflow and state dir; yields their log files."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env = {
        **base,
        "MESH_HOST": "127.0.0.1",
        "MESH_REDIS_PORT": str(loop_settings.redis_port),
        "MESH_MLFLOW_TRACKING_URI": str(loop_settings.mlflow_tracking_uri),
        "MESH_STATE_DIR": str(loop_settings.state_dir),
    }
    procs, logs = [], []
    for index in range(2):
        port = free_port()
        logs.append(tmp_path / f"training-{index}.log")
        procs.append(
            subprocess.Popen(
                [str(Path(sys.executable).parent / "mesh"), "run", "training"],
                env={**env, "MESH_TRAINING_PORT": str(port)},
                stdout=logs[-1].open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        wait_until(lambda p=port: _ready(p), timeout=90, what=f"training replica {index}")
    yield logs
    for proc in procs:
        os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=45)
    kill_all_with_env("MESH_STATE_DIR", env["MESH_STATE_DIR"])


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _trained_by(log: Path) -> set[str]:
    """The feature.ready event ids a replica trained a model for, from its JSON log lines."""
    lines = (json.loads(line) for line in log.read_text().splitlines() if line.startswith("{"))
    return {line["event_id"] for line in lines if line.get("event") == "model trained"}


async def test_two_training_replicas_train_each_feature_set_once(
    loop_settings: MeshSettings,
    mlflow_uri: str,
    redis_client: aioredis.Redis,
    trainers: list[Path],
) -> None:
    # The replicas train; in this process, only what feeds them and judges their candidates.
    async with mesh(loop_settings, ("ingest", "features", "registry")) as urls:
        async with httpx.AsyncClient(timeout=60) as http:
            for seed in range(BATCHES):
                await upload(http, urls["ingest"], rows=600, seed=50 + seed)
                # One at a time: a feature set is the dataset's latest snapshots when it is built.
                ready = await count(redis_client, events.FEATURES_READY, seed + 1)
        trained = await count(redis_client, events.MODEL_TRAINED, BATCHES)

    assert len({e.payload.feature_set_id for e in ready}) == BATCHES
    assert sorted(e.causation_id for e in trained) == sorted(e.event_id for e in ready)  # each once
    assert len({e.payload.run_id for e in trained}) == BATCHES
    by_replica = [_trained_by(log) for log in trainers]
    assert all(by_replica), f"a replica trained nothing: {by_replica}"
    assert not by_replica[0] & by_replica[1]
    assert by_replica[0] | by_replica[1] == {e.event_id for e in ready}
    client = MlflowClient(mlflow_uri, mlflow_uri)
    runs = {e.payload.run_id for e in trained}
    assert all(client.get_run(run_id).info.status == "FINISHED" for run_id in runs)
    assert len(await stream_events(redis_client, events.DEADLETTER)) == 0
