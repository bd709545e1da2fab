"""Training on a real MLflow server: one run per trigger, however often the trigger is delivered."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from services.training.trainer import TAG_TRIGGER, experiment_name, train
from services.training.windows import latest_window
from shared.ml.datasets import DatasetSchema, load_schema
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


@pytest.mark.timeout(300)
def test_pyfunc_takes_a_users_frame_with_values_missing_where_the_schema_allows(
    settings: MeshSettings, mlflow_uri: str, tmp_path: Path
) -> None:
    """The logged signature comes from the declared schema: an optional column is optional, and an
    optional int one a double, since a pandas frame (what pyfunc hands the model) holds NaN there."""
    client: MlflowClient = mlflow_client(settings.model_copy(update={"mlflow_tracking_uri": mlflow_uri}))
    config_dir, data_root = tmp_path / "config", tmp_path / "data"
    shutil.copytree(CONFIG_DIR, config_dir)
    declared_file = config_dir / "datasets" / "demo.yaml"
    declared = yaml.safe_load(declared_file.read_text())
    for column in declared["columns"]:
        if column["name"] == "support_calls":
            column.update(required=False, max_null_rate=0.2)
    declared_file.write_text(yaml.safe_dump(declared))
    schema = load_schema(config_dir, "demo")
    commit_snapshot(SnapshotStore(data_root), schema, "s1", generate(rows=600, seed=3))
    trained = train(
        client,
        latest_window(config_dir, data_root, "demo", None),
        load_model_config(config_dir, "demo"),
        trigger_type="features.ready",
        trigger_event_id=f"event-{uuid.uuid4().hex}",
        correlation_id="correlation-3",
    )

    signature = mlflow.models.get_model_info(trained.model_uri).signature
    assert signature is not None
    inputs = {spec.name: (spec.type.name, spec.required) for spec in signature.inputs.inputs}
    assert inputs["support_calls"] == ("double", False)
    assert inputs["last_login_days"] == ("double", False)
    assert inputs["age"] == ("long", True) and inputs["region"] == ("string", True)

    frame = generate(rows=4, seed=4).to_pandas()[list(inputs)]
    frame["support_calls"] = [1.0, np.nan, 3.0, np.nan]
    frame["last_login_days"] = np.nan
    predictions = mlflow.pyfunc.load_model(trained.model_uri).predict(frame)
    assert len(predictions) == 4
