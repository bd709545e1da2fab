"""Model versions made as the mesh makes them, without running its services: a batch committed as ingest
commits it, a feature set built as the features service builds it, a run trained and logged by the
training service's own ``train``, then registered and moved to ``champion`` by the registry's own
``register_and_promote`` (the gate's verdict given, not judged), and the promotion announced on the bus.
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import polars as pl
from mlflow.tracking import MlflowClient

from services.registry.aliases import alias_version, move_champion, register_and_promote
from services.registry.gate import GateDecision
from services.training.trainer import announcement, experiment_name, train
from shared import events
from shared.bus import MeshBus
from shared.events import ModelPromoted, ModelTrained, new_event
from shared.ml.datasets import load_schema
from shared.ml.feature_sets import build_feature_set
from shared.ml.features import load_feature_spec
from shared.ml.modeling import CHAMPION, ModelConfig
from shared.ml.snapshots import SnapshotStore
from shared.runtime.settings import MeshSettings
from tests.support.data import commit_snapshot

# A second dataset, nothing like the demo's: sensor readings and whether the device failed.
SENSORS_DATASET = """\
name: sensors
description: Synthetic device failures (tests only), columns unlike the demo's.
target: failed
columns:
  - {name: device_id, dtype: str}
  - {name: temperature, dtype: float, min: -50, max: 150}
  - {name: vibration, dtype: float, min: 0, max: 100}
  - {name: site, dtype: category, allowed: [alpha, beta, gamma]}
  - {name: failed, dtype: int, min: 0, max: 1}
"""
SENSORS_FEATURES = """\
dataset: sensors
target: failed
id_column: device_id
window: {last_snapshots: 1}
split: {holdout_fraction: 0.25, seed: 3}
features:
  - {name: temperature, op: numeric, source: temperature}
  - {name: vibration, op: numeric, source: vibration}
  - {name: site, op: one_hot, source: site}
"""
SENSORS_RECORD: dict[str, Any] = {"temperature": 71.5, "vibration": 12.0, "site": "beta"}


def sensors_model(model_name: str) -> str:
    """A model config of the sensors dataset named ``model_name`` (fast to train: a logistic regression)."""
    return (
        f"model_name: {model_name}\ndataset: sensors\nseed: 1\n"
        "estimator: {kind: logistic_regression, params: {C: 1.0}}\n"
        "gate: {floors: {roc_auc: 0.6}}\n"
    )


def sensors_batch(rows: int, seed: int) -> pl.DataFrame:
    """``rows`` readings of the sensors dataset: hot, shaking devices at site gamma fail more."""
    rng = np.random.default_rng(seed)
    temperature = rng.normal(60.0, 15.0, rows).clip(-50, 150)
    vibration = rng.gamma(2.0, 5.0, rows).clip(0, 100)
    site = rng.choice(["alpha", "beta", "gamma"], rows)
    logit = 0.08 * (temperature - 60) + 0.15 * (vibration - 10) + 0.8 * (site == "gamma")
    failed = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pl.DataFrame(
        {
            "device_id": [f"d{seed}-{i}" for i in range(rows)],
            "temperature": temperature,
            "vibration": vibration,
            "site": site,
            "failed": failed,
        }
    )


def write_sensors_config(config_dir: Path, model_name: str) -> None:
    """Declare the sensors dataset, its features, a model named ``model_name`` and a monitor config."""
    (config_dir / "datasets" / "sensors.yaml").write_text(SENSORS_DATASET)
    (config_dir / "features" / "sensors.yaml").write_text(SENSORS_FEATURES)
    (config_dir / "models" / "sensors.yaml").write_text(sensors_model(model_name))
    demo_monitor = (config_dir / "monitor" / "demo.yaml").read_text()
    monitor = demo_monitor.replace("dataset: demo", "dataset: sensors").replace(
        "model_name: churn-demo", f"model_name: {model_name}"
    )
    (config_dir / "monitor" / "sensors.yaml").write_text(monitor)


def train_version(
    client: MlflowClient, config_dir: Path, data_root: Path, config: ModelConfig, batch: pl.DataFrame
) -> ModelTrained:
    """``batch`` committed as a snapshot of ``config.dataset``, its feature set built, ``config``'s model
    trained on it and logged: what ``model.trained`` would announce (nothing registered yet)."""
    schema = load_schema(config_dir, config.dataset)
    snapshot = commit_snapshot(SnapshotStore(data_root), schema, f"snap-{uuid.uuid4().hex[:12]}", batch)
    spec = load_feature_spec(config_dir, config.dataset)
    manifest = build_feature_set(data_root, schema, spec, [snapshot])
    run = train(
        client,
        manifest,
        config,
        trigger_type="test",
        trigger_event_id=f"event-{uuid.uuid4().hex}",
        correlation_id=f"test-{uuid.uuid4().hex[:8]}",
    )
    return announcement(config, manifest, run)


def train_versions(
    client: MlflowClient,
    config_dir: Path,
    data_root: Path,
    jobs: list[tuple[ModelConfig, pl.DataFrame]],
) -> list[ModelTrained]:
    """:func:`train_version` of each job, in parallel threads: most of a training's time is MLflow
    inferring the logged model's requirements in a subprocess. The jobs must all be of one dataset, whose
    experiment is made first: MLflow's active experiment is process-wide, so trainings of two datasets at
    once could log a run into the other's experiment, and two threads could race to create one."""
    [dataset] = {config.dataset for config, _ in jobs}
    mlflow.set_experiment(experiment_name(dataset))
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [
            pool.submit(train_version, client, config_dir, data_root, config, batch) for config, batch in jobs
        ]
        return [future.result() for future in futures]


def promote(client: MlflowClient, trained: ModelTrained) -> ModelPromoted:
    """Register ``trained`` and make it the champion, as the registry does once its gate says yes."""
    decision = GateDecision(True, [], {"candidate": {"run_id": trained.run_id, "metrics": trained.metrics}})
    champion = alias_version(client, trained.model_name, CHAMPION)
    return register_and_promote(client, trained, decision, champion)


async def announce(settings: MeshSettings, promoted: ModelPromoted) -> None:
    """Publish ``model.promoted`` for ``promoted`` on the bus, as the registry does after promoting."""
    bus = MeshBus(settings, "registry")
    try:
        await bus.publish_many([new_event(events.MODEL_PROMOTED, promoted)])
    finally:
        await bus.stop()


def promote_and_announce(
    settings: MeshSettings, client: MlflowClient, trained: ModelTrained
) -> ModelPromoted:
    """:func:`promote`, then :func:`announce` (from synchronous code: a thread without an event loop)."""
    promoted = promote(client, trained)
    asyncio.run(announce(settings, promoted))
    return promoted


def promote_registered(
    settings: MeshSettings, client: MlflowClient, name: str, version: str
) -> ModelPromoted:
    """Make an already registered ``version`` the champion and announce it, as the registry's manual
    promote command does (POST /models/{name}/promote)."""
    promoted = move_champion(client, name, version, reason="test")
    asyncio.run(announce(settings, promoted))
    return promoted
