"""The gate's decisions on a real MLflow server: recorded on the candidate's run, and repeated rather than
retaken when the same ``model.trained`` comes again, so nothing is judged or registered twice."""

from __future__ import annotations

import uuid
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.dummy import DummyClassifier

from services.registry.decisions import decide, record_decision, recorded_decision
from services.registry.gate import GateDecision
from shared.events import ModelPromoted, ModelRejected, ModelTrained
from shared.ml.modeling import CHAMPION, PREVIOUS, ModelConfig
from shared.runtime.mlflow_client import mlflow_client
from shared.runtime.settings import MeshSettings

pytestmark = pytest.mark.integration

EVIDENCE = {"candidate": {"run_id": "r", "metrics": {"roc_auc": 0.81}}, "champion": None, "holdout_rows": 9}


@pytest.fixture
def client(settings: MeshSettings, mlflow_uri: str) -> MlflowClient:
    return mlflow_client(settings.model_copy(update={"mlflow_tracking_uri": mlflow_uri}))


@pytest.fixture
def model_name() -> str:
    return f"decisions-{uuid.uuid4().hex[:8]}"


def never_judged(model_name: str) -> ModelConfig:
    raise AssertionError(f"{model_name} was judged again although its decision is recorded")


def candidate(client: MlflowClient, model_name: str, *, with_model: bool = False) -> ModelTrained:
    """A finished run announced as ``model.trained`` would announce it; only registering needs the run to
    carry a model (a trivial one: the decisions here are recorded, never judged)."""
    experiment = client.get_experiment_by_name(model_name) or client.get_experiment(
        client.create_experiment(model_name)
    )
    if with_model:
        with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
            model = DummyClassifier(strategy="prior").fit(np.zeros((4, 1)), [0, 1, 0, 1])
            model_uri = mlflow.sklearn.log_model(model, name="model").model_uri
        run_id = run.info.run_id
    else:
        run_id = client.create_run(experiment.experiment_id).info.run_id
        client.set_terminated(run_id)
        model_uri = f"runs:/{run_id}/model"
    return ModelTrained(
        dataset="demo",
        model_name=model_name,
        run_id=run_id,
        model_uri=model_uri,
        metrics={"roc_auc": 0.81},
        feature_set_id=f"fs-{run_id[:8]}",
        snapshot_ids=["s1"],
    )


def promotion(outcome: ModelPromoted | ModelRejected) -> ModelPromoted:
    assert isinstance(outcome, ModelPromoted), outcome
    return outcome


def test_a_recorded_decision_reads_back_as_taken(client: MlflowClient, model_name: str) -> None:
    run_id = candidate(client, model_name).run_id
    assert recorded_decision(client, run_id) is None
    decision = GateDecision(False, ["roc_auc 0.6000 is below the floor 0.7"], EVIDENCE)
    record_decision(client, run_id, decision)
    assert recorded_decision(client, run_id) == decision


def test_a_recorded_rejection_is_repeated_not_retaken(
    client: MlflowClient, model_name: str, tmp_path: Path
) -> None:
    trained = candidate(client, model_name)
    record_decision(client, trained.run_id, GateDecision(False, ["worse than the champion"], EVIDENCE))
    # An empty data root: judging again would fail on the missing feature set, as would asking for a gate.
    for _ in range(2):
        outcome = decide(client, trained, tmp_path, never_judged)
        assert outcome == ModelRejected(
            model_name=model_name,
            run_id=trained.run_id,
            reasons=["worse than the champion"],
            evidence=EVIDENCE,
        )
    assert client.search_model_versions(f"name='{model_name}'") == []


def test_a_recorded_promotion_registers_its_run_once(
    client: MlflowClient, model_name: str, tmp_path: Path
) -> None:
    first, second = (candidate(client, model_name, with_model=True) for _ in range(2))
    for trained in (first, second):
        record_decision(client, trained.run_id, GateDecision(True, [], EVIDENCE))

    promoted = [promotion(decide(client, first, tmp_path, never_judged)) for _ in range(2)]
    assert [(p.version, p.previous_version) for p in promoted] == [("1", None), ("1", None)]

    # The second candidate, delivered twice: its redelivery keeps the champion it replaced as previous.
    promoted = [promotion(decide(client, second, tmp_path, never_judged)) for _ in range(2)]
    assert [(p.version, p.previous_version) for p in promoted] == [("2", "1"), ("2", "1")]
    assert promoted[0].evidence == EVIDENCE and promoted[0].model_uri == f"models:/{model_name}/2"

    assert len(client.search_model_versions(f"name='{model_name}'")) == 2
    assert client.get_model_version_by_alias(model_name, CHAMPION).run_id == second.run_id
    assert client.get_model_version_by_alias(model_name, PREVIOUS).run_id == first.run_id
