"""Training on a real MLflow server: one run per trigger, however often the trigger is delivered."""

from __future__ import annotations

import uuid
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from services.training.trainer import TAG_TRIGGER, experiment_name, train
from services.training.windows import latest_window
from shared.ml.datasets import DatasetSchema
from shared.ml.modeling import load_model_config
from shared.ml.snapshots import SnapshotStore
from shared.ops.demo_data import generate
from shared.runtime.mlflow_client import mlflow_client
from shared.runtime.settings import MeshSettings
from tests.support.data import CONFIG_DIR, commit_snapshot

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_a_redelivered_trigger_finds_its_finished_run_instead_of_training_again(
    settings: MeshSettings, mlflow_uri: str, schema: DatasetSchema, tmp_path: Path
) -> None:
    client: MlflowClient = mlflow_client(settings.model_copy(update={"mlflow_tracking_uri": mlflow_uri}))
    commit_snapshot(SnapshotStore(tmp_path), schema, "s1", generate(rows=600, seed=1))
    manifest = latest_window(CONFIG_DIR, tmp_path, "demo", None)
    config = load_model_config(CONFIG_DIR, "demo")
    trigger = f"event-{uuid.uuid4().hex}"

    first, again = [
        train(
            client,
            manifest,
            config,
            trigger_type="features.ready",
            trigger_event_id=trigger,
            correlation_id="correlation-1",
        )
        for _ in range(2)
    ]
    assert (again.run_id, again.model_uri) == (first.run_id, first.model_uri)
    assert again.metrics == pytest.approx(first.metrics)

    experiment = client.get_experiment_by_name(experiment_name("demo"))
    assert experiment is not None
    logged = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{TAG_TRIGGER}` = '{trigger}'"
    )
    assert [r.info.run_id for r in logged] == [first.run_id]
    tags = logged[0].data.tags
    assert tags["mesh.model_uri"] == first.model_uri
    assert tags["mesh.feature_set_id"] == manifest.feature_set_id and tags["mesh.trigger"] == "features.ready"
    assert logged[0].data.metrics == pytest.approx(first.metrics)


@pytest.mark.timeout(300)
def test_a_run_an_earlier_delivery_left_unfinished_is_marked_failed_and_trained_anew(
    settings: MeshSettings, mlflow_uri: str, schema: DatasetSchema, tmp_path: Path
) -> None:
    client: MlflowClient = mlflow_client(settings.model_copy(update={"mlflow_tracking_uri": mlflow_uri}))
    commit_snapshot(SnapshotStore(tmp_path), schema, "s1", generate(rows=600, seed=2))
    manifest = latest_window(CONFIG_DIR, tmp_path, "demo", None)
    trigger = f"event-{uuid.uuid4().hex}"
    # What a delivery killed mid-log leaves: a run with the trigger's tag, never ended, no model.
    experiment = mlflow.set_experiment(experiment_name("demo"))  # mlflow_client set where it lives
    abandoned = client.create_run(experiment.experiment_id, tags={TAG_TRIGGER: trigger})

    trained = train(
        client,
        manifest,
        load_model_config(CONFIG_DIR, "demo"),
        trigger_type="features.ready",
        trigger_event_id=trigger,
        correlation_id="correlation-2",
    )

    assert trained.run_id != abandoned.info.run_id
    assert client.get_run(abandoned.info.run_id).info.status == "FAILED"
    assert client.get_run(trained.run_id).info.status == "FINISHED"
