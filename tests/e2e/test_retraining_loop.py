"""The whole mesh as processes, started by the launcher from docker-compose.yml: valkey-server, an MLflow
server, ingest, features, training, registry and the BentoML serving service, on free loopback ports.

The tests of this module are one scenario, in order: a first model serves; a better one replaces it under
load; a poisoned one is rejected; rollback serves the previous version; lineage leads to the data; drift
and labels retrain it; a second dataset's model serves beside it, each moving on its own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from services.ingest.batches import content_hash, validate_batch
from shared import events
from shared.ml.datasets import load_schema
from shared.ops.demo_data import EXAMPLE_RECORD, cancer, cancer_record, generate
from shared.ops.driver import MeshDriver
from shared.ops.processes import registry_token
from tests.support.readme import run_block, section_blocks
from tests.support.stack import running_stack, stack_settings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

MODEL = "churn-demo"
CANCER = "cancer-demo"  # the second model, of deploy/config/*/cancer.yaml
RECORD = EXAMPLE_RECORD


def upload(mesh: MeshDriver, **knobs: Any) -> dict[str, Any]:
    """Upload a batch generated with ``demo_data.generate`` knobs, which ingest must store as new."""
    ingested = mesh.upload(generate(**knobs))
    assert not ingested["duplicate"], ingested  # ingest answered 201 Created, not 200 (already known)
    return ingested


async def predict_until(
    mesh: MeshDriver, model: str, features: dict[str, Any], stop: asyncio.Event, log: list[tuple[int, str]]
) -> None:
    """One client's sequential /predict requests for ``model`` until ``stop``: (status, version) each."""
    async with httpx.AsyncClient(base_url=mesh.serving, timeout=30) as http:
        while not stop.is_set():
            try:
                response = await http.post("/predict", json={"model": model, "features": features})
                log.append((response.status_code, response.headers.get("x-model-version", "")))
            except httpx.HTTPError as exc:
                log.append((0, type(exc).__name__))


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshDriver]:
    with running_stack(stack_settings(tmp_path_factory.mktemp("stack"))) as driver:
        yield driver


def test_data_in_a_validated_model_out(mesh: MeshDriver) -> None:
    assert mesh.http.get(f"{mesh.serving}/readyz").status_code == 503  # no model before any data
    ingested = upload(mesh, rows=600, seed=1)
    served = mesh.wait_for_version("1")

    chain = [mesh.events(s) for s in (events.DATA_INGESTED, events.FEATURES_READY, events.MODEL_TRAINED)]
    [[data], [features], [trained]] = chain
    [promoted] = mesh.events(events.MODEL_PROMOTED)
    assert data.event_id == ingested["event_id"]
    assert [features.causation_id, trained.causation_id, promoted.causation_id] == [
        data.event_id, features.event_id, trained.event_id
    ]  # fmt: skip
    assert promoted.correlation_id == data.correlation_id
    assert (
        served["run_id"] == trained.payload.run_id
        and served["feature_set_id"] == features.payload.feature_set_id
    )
    assert mesh.mlflow.get_model_version_by_alias(MODEL, "champion").version == "1"

    response = mesh.predict(RECORD, MODEL)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["prediction"] in (0, 1) and 0.0 <= body["probability"] <= 1.0
    assert body["model"]["version"] == "1" and response.headers["x-model-version"] == f"{MODEL}/1"
    assert f"feature_set={served['feature_set_id']}" in response.headers["x-model-lineage"]

    two = {"model": MODEL, "records": [RECORD, {**RECORD, "age": 70}]}
    batch = mesh.http.post(f"{mesh.serving}/predict_batch", json=two)
    assert batch.status_code == 200 and len(batch.json()["predictions"]) == 2

    bad = mesh.predict({**RECORD, "region": "mars"}, MODEL)
    assert bad.status_code == 422 and bad.json()["field"] == "features.region"
    unknown = mesh.predict({**RECORD, "colour": "red"}, MODEL)
    assert unknown.status_code == 422 and unknown.json()["field"] == "features.colour"
    incomplete = {"model": MODEL, "records": [RECORD, {"age": 30}]}
    missing = mesh.http.post(f"{mesh.serving}/predict_batch", json=incomplete)
    assert missing.status_code == 422 and missing.json()["field"].startswith("records[1].")

    # Served predictions are published for the monitor, off the response path.
    published = mesh.wait_for("prediction records", lambda: mesh.events(events.PREDICTIONS))
    assert {p.payload.model_version for p in published} == {"1"}


def test_a_better_model_is_hot_swapped_under_load_without_a_failed_request(mesh: MeshDriver) -> None:
    mesh.wait_for_version("1")

    async def scenario() -> list[list[tuple[int, str]]]:
        stop = asyncio.Event()
        logs: list[list[tuple[int, str]]] = [[] for _ in range(6)]
        tasks = [asyncio.create_task(predict_until(mesh, MODEL, RECORD, stop, log)) for log in logs]
        await asyncio.sleep(1.0)
        await asyncio.to_thread(upload, mesh, rows=4000, seed=2)
        await asyncio.to_thread(mesh.wait_for_version, "2")
        await asyncio.sleep(2.0)  # keep the load on after the swap
        stop.set()
        await asyncio.gather(*tasks)
        return logs

    logs = asyncio.run(scenario())
    responses = [entry for log in logs for entry in log]
    failures = [entry for entry in responses if entry[0] != 200]
    assert not failures, f"{len(failures)} of {len(responses)} requests failed: {failures[:5]}"
    assert {version for _, version in responses} == {f"{MODEL}/1", f"{MODEL}/2"}
    for log in logs:  # each client's requests are sequential: the version switches exactly once
        versions = [version for _, version in log]
        switches = sum(1 for a, b in itertools.pairwise(versions) if a != b)
        assert switches == 1 and versions[0].endswith("/1") and versions[-1].endswith("/2"), versions
    assert len(responses) > 50


def test_a_poisoned_batch_never_becomes_champion(mesh: MeshDriver) -> None:
    before = mesh.wait_for_version("2")
    rejected_before = len(mesh.events(events.MODEL_REJECTED))
    upload(mesh, rows=4000, seed=3, label_noise=1.0)
    rejected = mesh.wait_for(
        "the gate's verdict", lambda: mesh.events(events.MODEL_REJECTED)[rejected_before:]
    )
    assert rejected[0].payload.reasons
    assert mesh.served_model() == before  # same version, same load
    assert mesh.mlflow.get_model_version_by_alias(MODEL, "champion").version == "2"
    assert len(mesh.mlflow.search_model_versions(f"name='{MODEL}'")) == 2


def test_rollback_serves_the_previous_version(mesh: MeshDriver) -> None:
    mesh.wait_for_version("2")
    token = registry_token(mesh.settings)
    auth = {"authorization": f"Bearer {token}"}
    response = mesh.http.post(f"{mesh.registry}/models/{MODEL}/rollback", headers=auth)
    assert response.status_code == 200, response.text
    mesh.wait_for_version("1")
    response = mesh.http.post(f"{mesh.registry}/models/{MODEL}/promote", json={"version": "2"}, headers=auth)
    assert response.status_code == 200, response.text
    mesh.wait_for_version("2")


def test_lineage_leads_from_the_served_model_to_its_data(mesh: MeshDriver) -> None:
    served = mesh.wait_for_version("2")
    run = mesh.mlflow.get_run(served["run_id"])
    assert run.data.tags["mesh.feature_set_id"] == served["feature_set_id"]
    snapshot_ids = json.loads(run.data.tags["mesh.snapshot_ids"])
    assert snapshot_ids == served["snapshot_ids"] and len(snapshot_ids) == 2
    feature_dir = Path(run.data.tags["mesh.feature_set_dir"])
    manifest = json.loads((feature_dir / "manifest.json").read_text())
    assert manifest["feature_set_id"] == served["feature_set_id"] and manifest["snapshot_ids"] == snapshot_ids
    schema = load_schema(mesh.settings.config_dir, "demo")
    root = mesh.settings.effective_data_root / "datasets" / "demo" / "snapshots"
    for snapshot_id in snapshot_ids:
        frame, failures = validate_batch(pl.read_parquet(root / f"{snapshot_id}.parquet"), schema)
        assert not failures
        assert content_hash("demo", frame) == snapshot_id  # the file is the data the id names
    assert run.data.params["feature_set_id"] == served["feature_set_id"]
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {served["feature_set_id"]}


def test_drifted_traffic_and_late_labels_lead_to_a_new_champion(mesh: MeshDriver) -> None:
    before = mesh.wait_for_version("2")

    # Inputs drift: the monitor sees it, but holds the retrain until labels give it data to learn from.
    # (Earlier load, one record repeated, may already have opened an episode: judge the latest window.)
    windows_before = mesh.drift()["windows"]
    mesh.send_traffic(generate(rows=1500, seed=41, covariate_shift=1.0), MODEL)

    def shifted_window() -> dict[str, Any] | None:
        state = mesh.drift()
        latest: dict[str, Any] = state["latest"]
        fresh = state["windows"] >= windows_before + 3 and latest["model_version"] == "2"
        return latest if fresh else None

    latest = mesh.wait_for("the shifted windows", shifted_window)
    assert latest["decision"]["episode_active"] and latest["decision"]["fired"]
    assert latest["decision"]["retrain"] is False
    assert any("labelled rows" in reason for reason in latest["decision"]["reasons"])
    detected = mesh.events(events.DRIFT_DETECTED)
    assert detected and {"1", "2"} >= {e.payload.model_version for e in detected}
    assert not mesh.events(events.RETRAIN_REQUESTED)

    # The rule changes and the labels arrive over HTTP: one retrain, and the gate promotes the result.
    shifted = generate(rows=2000, seed=42, concept_shift=1.0)
    ids = mesh.send_traffic(shifted, MODEL)
    bad = mesh.http.post(f"{mesh.monitor}/labels", json={"labels": [{"label": 1}]})
    assert bad.status_code == 422 and bad.json()["field"] == "labels[0].request_id"
    assert mesh.send_labels(ids, shifted["churned"]) == 2000  # accepted (202), else MeshDriverError
    [retrain] = mesh.wait_for("a retrain request", lambda: mesh.events(events.RETRAIN_REQUESTED))
    fresh = mesh.wait_for_model("the retrained version", lambda m: m["version"] != "2")
    assert fresh["version"] == "3" and before["version"] == "2"
    [promoted] = [e for e in mesh.events(events.MODEL_PROMOTED) if e.payload.version == "3"]
    assert promoted.correlation_id == retrain.correlation_id
    assert len(mesh.events(events.RETRAIN_REQUESTED)) == 1
    report = mesh.http.get(f"{mesh.monitor}/drift/{MODEL}/report")
    assert report.status_code == 200 and "data:image/png;base64," in report.text


def test_one_trace_follows_an_upload_from_ingest_to_the_swap(mesh: MeshDriver) -> None:
    spans = [json.loads(line) for line in (mesh.settings.state_dir / "traces.jsonl").read_text().splitlines()]
    upload = min((s for s in spans if s["name"] == "ingest.upload"), key=lambda s: s["start_time"])
    trace_id = upload["context"]["trace_id"]
    chain = [s for s in spans if s["context"]["trace_id"] == trace_id]
    services = {s["resource"]["attributes"]["service.name"] for s in chain}
    assert {"mesh-ingest", "mesh-features", "mesh-training", "mesh-registry", "mesh-serving"} <= services
    names = {s["name"] for s in chain}
    assert {
        "POST /datasets/{name}/batches",
        "features.build",
        "training.fit",
        "registry.gate",
        "serving.swap",
    } <= names
    assert {"data.ingested process", "features.ready process", "model.trained process"} <= names
    handled = [s for s in chain if s["name"].endswith(" process")]
    assert all(
        s["attributes"]["messaging.system"] == "redis" and s["attributes"]["mesh.event_id"] for s in handled
    )
    swap = next(s for s in chain if s["name"] == "serving.swap")
    assert swap["attributes"]["mesh.model_version"] == "1"
    # Prediction requests are traced too, a sample of them (compose: a tenth) to spare the trace store.
    served = [s for s in spans if s["resource"]["attributes"]["service.name"] == "mesh-serving"]
    requests = [s for s in served if s["name"] in ("POST /predict", "POST /predict_batch")]
    assert requests and all(s["attributes"]["http.response.status_code"] in (200, 422) for s in requests)

    # The same trace in the MLflow UI, the embedded stack's trace viewer.
    experiment = mesh.mlflow.get_experiment_by_name("mesh-traces")
    assert experiment is not None
    shown = mesh.mlflow.get_trace(f"tr-{trace_id.removeprefix('0x')}")
    assert shown.info.experiment_id == experiment.experiment_id
    assert {"ingest.upload", "features.build", "training.fit", "serving.swap"} <= {
        s.name for s in shown.data.spans
    }


@pytest.mark.parametrize(
    ("service", "families"),
    [
        (
            "ingest",
            {"mesh_http_request_duration_seconds", "mesh_events_published", "mesh_consumer_lag_messages"},
        ),
        ("features", {"mesh_events_handled", "mesh_consumer_pending_messages"}),
        ("training", {"mesh_events_handled", "mesh_events_failed"}),
        ("registry", {"mesh_promotions", "mesh_rejections", "mesh_http_request_duration_seconds"}),
        ("monitor", {"mesh_drift_score", "mesh_retrains_triggered", "mesh_monitor_decisions"}),
        (
            "serving",
            {
                "mesh_predictions",
                "mesh_model_swap_duration_seconds",
                "bentoml_service_request_duration_seconds",
            },
        ),
    ],
)
def test_every_service_exports_its_metrics(mesh: MeshDriver, service: str, families: set[str]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    response = mesh.http.get(f"http://127.0.0.1:{mesh.settings.port_for(service)}/metrics")
    assert response.status_code == 200
    exported = {family.name for family in text_string_to_metric_families(response.text)}
    assert families <= exported, sorted(families - exported)


def test_a_second_model_serves_beside_the_first_and_each_moves_on_its_own(mesh: MeshDriver) -> None:
    """A second dataset's model is served by the same serving process; rolling one model back and
    forth under load on both fails no request and never touches the other; both retrain at once."""
    churn = mesh.mlflow.get_model_version_by_alias(MODEL, "champion").version
    ingested = mesh.upload(cancer(), dataset="cancer")
    assert not ingested["duplicate"]
    mesh.wait_for_version("1", CANCER)
    answer = mesh.predict(cancer_record(0), CANCER)
    assert answer.status_code == 200 and answer.headers["x-model-version"] == f"{CANCER}/1"
    assert mesh.predict(RECORD, MODEL).headers["x-model-version"] == f"{MODEL}/{churn}"
    listed = mesh.http.get(f"{mesh.serving}/models").json()
    assert {MODEL, CANCER} <= {m["name"] for m in listed["models"]}

    auth = {"authorization": f"Bearer {registry_token(mesh.settings)}"}
    previous = mesh.mlflow.get_model_version_by_alias(MODEL, "previous").version

    def move_churn(action: str, version: str) -> None:
        body = {"version": version} if action == "promote" else None
        response = mesh.http.post(f"{mesh.registry}/models/{MODEL}/{action}", json=body, headers=auth)
        assert response.status_code == 200, response.text
        mesh.wait_for_version(version, MODEL)

    async def scenario() -> tuple[list[Any], list[Any]]:
        stop = asyncio.Event()
        churn_log: list[Any] = []
        cancer_log: list[Any] = []
        tasks = [
            asyncio.create_task(predict_until(mesh, MODEL, RECORD, stop, churn_log)),
            asyncio.create_task(predict_until(mesh, CANCER, cancer_record(1), stop, cancer_log)),
            asyncio.create_task(predict_until(mesh, CANCER, cancer_record(2), stop, cancer_log)),
        ]
        await asyncio.sleep(1.0)
        await asyncio.to_thread(move_churn, "rollback", previous)
        await asyncio.to_thread(move_churn, "promote", churn)
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*tasks)
        return churn_log, cancer_log

    churn_log, cancer_log = asyncio.run(scenario())
    failures = [entry for entry in churn_log + cancer_log if entry[0] != 200]
    assert not failures, f"{len(failures)} requests failed: {failures[:5]}"
    assert {version for _, version in churn_log} == {f"{MODEL}/{churn}", f"{MODEL}/{previous}"}
    assert {version for _, version in cancer_log} == {f"{CANCER}/1"}  # untouched by the other's moves
    assert mesh.mlflow.get_model_version_by_alias(CANCER, "champion").version == "1"

    # Both retrain at once: each decision names its own model, and only its own aliases may move.
    def decisions(model: str) -> int:
        decided = mesh.events(events.MODEL_PROMOTED) + mesh.events(events.MODEL_REJECTED)
        return sum(1 for e in decided if e.payload.model_name == model)

    before = {model: decisions(model) for model in (MODEL, CANCER)}
    upload(mesh, rows=3000, seed=61)
    mesh.upload(cancer(rows=500, seed=3), dataset="cancer")
    mesh.wait_for("a decision on each model", lambda: all(decisions(m) > n for m, n in before.items()))
    for model in (MODEL, CANCER):
        champion = mesh.mlflow.get_model_version_by_alias(model, "champion").version
        mesh.wait_for_version(champion, model)


def test_the_readme_commands_run_as_written(mesh: MeshDriver) -> None:
    """An operator follows the README's "Using it" against the stack the scenario left (several versions
    of each model): every command succeeds, and the events it published were handled, none dead-lettered.
    Its own request ids stand where the README says "<from /predict>"."""
    letters_before = mesh.count(events.DEADLETTER)
    request_id = mesh.predict(RECORD).json()["request_id"]
    blocks = section_blocks("Using it")
    assert len(blocks) >= 6, blocks
    for block in blocks:
        run_block(block, mesh.settings, {"<from /predict>": request_id})

    def ingest_caught_up() -> bool | None:
        [group] = mesh.redis.xinfo_groups(events.INGEST_REQUESTED)
        return (group["lag"] == 0 and group["pending"] == 0) or None

    mesh.wait_for("ingest to handle the published requests", ingest_caught_up)
    letters = mesh.events(events.DEADLETTER)[letters_before:]
    assert [(letter.payload.stream, letter.payload.error) for letter in letters] == []


def test_no_log_or_trace_of_the_whole_run_holds_the_registry_token(mesh: MeshDriver) -> None:
    # Last in the scenario: every admin call above (promote, rollback) carried the token; none of the
    # components may have written it anywhere an operator's log shipper or trace viewer would read.
    token = registry_token(mesh.settings).encode()
    written = [*(mesh.settings.state_dir / "logs").glob("*.log"), mesh.settings.state_dir / "traces.jsonl"]
    assert len(written) > 8
    assert [path.name for path in written if token in path.read_bytes()] == []
