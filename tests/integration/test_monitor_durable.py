"""The monitor as processes (``mesh run monitor``) over a real valkey and MLflow server: killed with -9
mid-window and restarted, or run as two replicas, it ends in the same state as one monitor left alone —
every labelled row counted once, the same windows, the same policy state and the same decisions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import redis.asyncio as aioredis
from mlflow.tracking import MlflowClient

from services.monitor.state import ModelKeys
from shared import events
from shared.events import Envelope
from shared.ml.datasets import DatasetSchema
from shared.ml.feature_sets import reference_profile, split_mask
from shared.ml.features import FeatureSpec
from shared.ops.demo_data import generate
from shared.ops.embedded import free_port
from shared.runtime.retry import wait_for, wait_until
from tests.support.monitor import labels, predictions, tuned_config_dir
from tests.support.processes import kill_all_with_env
from tests.support.streams import stream_events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MODEL = "durable-churn"  # a model of its own on the session's MLflow server
ROWS = 1_200  # drifted predictions: six windows of 200, then a label for each
CHUNK = 100  # events per XADD round trip, as a busy producer would send them


@pytest.fixture(scope="module")
def reference_version(mlflow_uri: str, schema: DatasetSchema, spec: FeatureSpec) -> str:
    """Version 1 of MODEL: a run with the demo's training profile and an accuracy at promotion."""
    client = MlflowClient(mlflow_uri, mlflow_uri)
    raw = generate(rows=3000, seed=0)
    profile = reference_profile(raw.filter(~split_mask(raw, spec)), schema, spec.input_columns)
    experiment = client.get_experiment_by_name("durable-monitor") or client.get_experiment(
        client.create_experiment("durable-monitor")
    )
    run = client.create_run(experiment.experiment_id)
    client.log_dict(run.info.run_id, profile, "features/profile.json")
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name = '{MODEL}'"):
        client.create_registered_model(MODEL)
    version = client.create_model_version(
        MODEL,
        f"{run.info.artifact_uri}/model",
        run_id=run.info.run_id,
        tags={"mesh.metrics": json.dumps({"accuracy": 0.75})},
    )
    return str(version.version)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """Windows of 200 closed by size alone (no clock in the outcome); a retrain once 300 rows are labelled."""
    return tuned_config_dir(
        tmp_path,
        model_name=MODEL,
        window={"size": 200, "min_size": 100, "max_seconds": 3600},
        performance={"min_labels": 100},
        retrain={"min_labelled_rows": 300, "cooldown_s": 3600},
    )


class Monitors:
    """Monitor processes of one run, each on its own port, sharing the run's state dir and Redis."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        port = free_port()
        log = (self.logs / f"monitor-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mesh"), "run", "monitor"],
            env={**self.env, "MESH_MONITOR_PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        wait_until(lambda: _ready(port, proc), timeout=90, what=f"monitor on port {port}")
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        kill_all_with_env("MESH_STATE_DIR", self.env["MESH_STATE_DIR"])


def _ready(port: int, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"monitor exited with {proc.returncode} before it was ready")
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
async def run(
    redis_port: int, mlflow_uri: str, config_dir: Path, tmp_path: Path, reference_version: str
) -> AsyncIterator[Any]:
    """Starts a run: an empty Redis, a state dir, and a factory of monitor processes for it."""
    started: list[Monitors] = []

    async def new_run(name: str) -> Monitors:
        client = aioredis.from_url(f"redis://127.0.0.1:{redis_port}/0")
        await client.flushall()
        await client.aclose()
        root = tmp_path / name
        root.mkdir()
        base = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
        env = {
            **base,
            "MESH_HOST": "127.0.0.1",
            "MESH_REDIS_PORT": str(redis_port),
            "MESH_MLFLOW_TRACKING_URI": mlflow_uri,
            "MESH_CONFIG_DIR": str(config_dir),
            "MESH_STATE_DIR": str(root / "state"),
            "MESH_BUS_RECLAIM_IDLE_MS": "1000",
            "MESH_BUS_RECLAIM_INTERVAL_MS": "300",
            "MESH_BUS_BLOCK_MS": "200",
        }
        monitors = Monitors(env, root)
        started.append(monitors)
        return monitors

    yield new_run
    for monitors in started:
        monitors.stop()


async def _send(redis_client: aioredis.Redis, batch: list[Envelope[Any]]) -> None:
    for first in range(0, len(batch), CHUNK):
        pipe = redis_client.pipeline(transaction=False)
        for event in batch[first : first + CHUNK]:
            pipe.xadd(event.type, {"__data__": event.model_dump_json()})
        await pipe.execute()


async def _settled(redis_client: aioredis.Redis) -> bool:
    """Every entry read and acknowledged, no full window or unjudged labels left behind."""
    for stream in (events.PREDICTIONS, events.LABELS):
        groups = {g["name"].decode(): g for g in await redis_client.xinfo_groups(stream)}
        group = groups.get("monitor")
        if group is None or group["pending"] or group["lag"]:
            return False
    keys = ModelKeys(MODEL)
    if int(await redis_client.get(keys.labelled_since) or 0) >= 100:
        return False
    lengths = [await redis_client.llen(key) for key in await redis_client.keys(keys.window("*"))]
    return all(length < 200 for length in lengths)


async def _outcome(redis_client: aioredis.Redis) -> dict[str, Any]:
    """What a run ends with, in terms that do not depend on how events were split into batches."""
    await wait_for(lambda: _settled(redis_client), timeout=120, what="the monitor to settle")
    keys = ModelKeys(MODEL)
    history = [json.loads(row) for row in await redis_client.lrange(keys.history, 0, -1)]
    policy = json.loads(await redis_client.get(keys.policy))
    ingests = await stream_events(redis_client, events.INGEST_REQUESTED)
    shipped = sum(pl.read_parquet(event.payload.uri).height for event in ingests)
    labelled = await redis_client.lrange(keys.labelled, 0, -1)
    return {
        "labelled_rows": len(labelled),
        "distinct_labelled_requests": len({json.loads(r)["record"]["request_id"] for r in labelled}),
        "feedback_rows": shipped + await redis_client.llen(keys.feedback),
        "drift_windows": sum(1 for h in history if h["rows"] > 0),
        "rows_in_drift_windows": sum(h["rows"] for h in history),
        "drift_detected": await redis_client.xlen(events.DRIFT_DETECTED),
        "feedback_batches": len(ingests),
        "retrain_requested": await redis_client.xlen(events.RETRAIN_REQUESTED),
        "policy": {k: policy[k] for k in ("episode_active", "retrained_in_episode")},
        "retrains_recorded": len(policy["retrains"]),
    }


def _traffic(spec: FeatureSpec) -> tuple[list[Envelope[Any]], list[Envelope[Any]]]:
    predicted = predictions(generate(rows=ROWS, seed=41, covariate_shift=1.0), spec, model=MODEL)
    return predicted, labels(predicted, wrong=False)


async def test_a_monitor_killed_mid_window_ends_as_one_left_alone(
    run: Any, redis_client: aioredis.Redis, config_dir: Path, spec: FeatureSpec
) -> None:
    predicted, labelled = _traffic(spec)

    alone = await run("alone")
    alone.start()
    await _send(redis_client, predicted)
    await wait_for(lambda: _settled(redis_client), timeout=120, what="predictions handled")
    await _send(redis_client, labelled)
    expected = await _outcome(redis_client)
    alone.stop()
    assert expected == {
        "labelled_rows": ROWS,
        "distinct_labelled_requests": ROWS,
        "feedback_rows": ROWS,
        "drift_windows": ROWS // 200,
        "rows_in_drift_windows": ROWS,
        "drift_detected": 1,
        "feedback_batches": 1,
        "retrain_requested": 0,  # asked for once ingest stores the feedback batch (no ingest here)
        "policy": {"episode_active": True, "retrained_in_episode": True},
        "retrains_recorded": 1,
    }

    killed = await run("killed")
    victim = killed.start()
    for half in (predicted[: ROWS // 2 + 50], predicted[ROWS // 2 + 50 :]):
        await _send(redis_client, half)
        # Mid-window: the first half leaves 100 rows in an open window; the kill lands while it is read.
        killed.kill(victim)
        victim = killed.start()
    await _send(redis_client, labelled[: ROWS // 3])
    killed.kill(victim)
    killed.start()
    await _send(redis_client, labelled[ROWS // 3 :])
    assert await _outcome(redis_client) == expected


async def test_two_monitor_replicas_decide_as_one(
    run: Any, redis_client: aioredis.Redis, config_dir: Path, spec: FeatureSpec
) -> None:
    predicted, labelled = _traffic(spec)
    pair = await run("pair")
    pair.start()
    pair.start()
    await _send(redis_client, predicted)
    await wait_for(lambda: _settled(redis_client), timeout=120, what="predictions handled")
    await _send(redis_client, labelled)
    outcome = await _outcome(redis_client)
    assert outcome["labelled_rows"] == outcome["distinct_labelled_requests"] == ROWS
    assert outcome["feedback_rows"] == ROWS
    assert outcome["drift_windows"] == ROWS // 200 and outcome["rows_in_drift_windows"] == ROWS
    assert outcome["drift_detected"] == outcome["feedback_batches"] == 1
    assert outcome["policy"] == {"episode_active": True, "retrained_in_episode": True}
    assert outcome["retrains_recorded"] == 1
    consumers = await redis_client.xinfo_consumers(events.PREDICTIONS, "monitor")
    assert len(consumers) == 2  # both replicas read from the group
