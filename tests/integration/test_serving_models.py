"""One serving deployment, many models: every declared model with a champion served side by side by the
real BentoML server (``mesh run serving`` subprocesses), each hot-swapped on its own under load, new ones
picked up without a restart, memory bounded by an LRU, and every worker of a multi-worker server following
a promotion.

Two models of different datasets: the demo's (deploy/config) and a small synthetic ``sensors`` dataset
declared in a temporary config dir. Versions are trained, registered and promoted with the training and
registry services' own functions (tests/support/champions.py) on the session's real MLflow server, and
promotions announced on the session's real valkey. Model names carry a per-run suffix: the MLflow server is
shared with other tests. Three servers boot together, sharing the module: ``main`` (one worker, room for
every model), ``lru`` (room for one model) and ``workers`` (two worker processes).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import yaml
from mlflow.tracking import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from shared.events import ModelPromoted, ModelTrained
from shared.ml.modeling import CHAMPION, ModelConfig, load_model_config, model_configs
from shared.ops.demo_data import EXAMPLE_RECORD, generate
from shared.runtime.auth import bearer_header
from shared.runtime.mlflow_client import mlflow_client
from shared.runtime.retry import wait_for, wait_until
from shared.runtime.settings import MeshSettings
from tests.support.champions import (
    SENSORS_RECORD,
    promote_and_announce,
    promote_registered,
    sensors_batch,
    sensors_model,
    train_versions,
    write_sensors_config,
)
from tests.support.serving import ServingServer, demo_only_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

RUN = uuid.uuid4().hex[:6]
DEMO = f"churn-demo-{RUN}"
SENSORS = f"sensors-{RUN}"
LATE = f"sensors-late-{RUN}"  # declared while the servers run
RECORDS: dict[str, dict[str, Any]] = {DEMO: EXAMPLE_RECORD, SENSORS: SENSORS_RECORD, LATE: SENSORS_RECORD}
RECONCILE_S = 3.0
LRU_TOKEN = "lru-api-token"
PROMOTION_BOUND_S = 30.0  # a promotion reaches every worker within this (event at once, else reconcile)


@dataclass
class Mesh:
    """The module's config dir, MLflow and bus, and the versions trained but not yet promoted."""

    settings: MeshSettings
    client: MlflowClient
    data_root: Path
    pending: dict[str, list[ModelTrained]] = field(default_factory=dict)

    @property
    def config_dir(self) -> Path:
        return self.settings.config_dir

    def config(self, name: str) -> ModelConfig:
        if name == LATE:
            return ModelConfig.model_validate(yaml.safe_load(sensors_model(LATE)))
        return load_model_config(self.config_dir, "demo" if name == DEMO else "sensors")

    def batch(self, name: str, seed: int) -> pl.DataFrame:
        return generate(rows=800, seed=seed) if name == DEMO else sensors_batch(600, seed)

    def train(self, *versions: tuple[str, int]) -> list[ModelTrained]:
        """Train the models named, each on a batch of its seed (of one dataset: in parallel)."""
        jobs = [(self.config(name), self.batch(name, seed)) for name, seed in versions]
        return train_versions(self.client, self.config_dir, self.data_root, jobs)

    def promote_next(self, name: str) -> ModelPromoted:
        """Promote (and announce) the next pending version of ``name``, trained beforehand."""
        return promote_and_announce(self.settings, self.client, self.pending[name].pop(0))

    def promote_another(self, name: str) -> ModelPromoted:
        """A version of ``name`` other than its champion promoted: the next pending one, else (the
        pending ones used by other tests) an earlier registered one, through the manual promote."""
        if self.pending.get(name):
            return self.promote_next(name)
        champion = self.client.get_model_version_by_alias(name, CHAMPION).version
        registered = self.client.search_model_versions(f"name='{name}'")
        other = min((v.version for v in registered if v.version != champion), key=int)
        return promote_registered(self.settings, self.client, name, other)


@pytest.fixture(scope="module")
def mesh(redis_port: int, mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Mesh:
    """deploy/config copied, holding only the demo's model (renamed), plus the sensors dataset and model."""
    root = tmp_path_factory.mktemp("serving-models")
    config_dir = demo_only_config(root, DEMO)
    write_sensors_config(config_dir, SENSORS)
    settings = MeshSettings(
        redis_port=redis_port, mlflow_tracking_uri=mlflow_uri, state_dir=root / "state", config_dir=config_dir
    )
    mesh = Mesh(settings=settings, client=mlflow_client(settings), data_root=root / "data")
    assert [c.model_name for c in model_configs(config_dir)] == [DEMO, SENSORS]
    return mesh


def server_env(mesh: Mesh, **extra: str) -> dict[str, str]:
    return {
        "MESH_REDIS_PORT": str(mesh.settings.redis_port),
        "MESH_MLFLOW_TRACKING_URI": str(mesh.settings.mlflow_tracking_uri),
        "MESH_CONFIG_DIR": str(mesh.config_dir),
        "MESH_SERVING_RECONCILE_S": str(RECONCILE_S),
        "MESH_SERVING_SAMPLE_RATE": "0",
        **extra,
    }


@pytest.fixture(scope="module")
def servers(mesh: Mesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServingServer]]:
    """Three servers booting at once (while the first versions train): the one most tests use, one with
    room for a single model, one with two workers."""
    root = tmp_path_factory.mktemp("servers")
    started = {
        "main": ServingServer(root / "main", server_env(mesh)),
        # Also the one whose predictions need a token (MESH_API_TOKEN).
        "lru": ServingServer(
            root / "lru", server_env(mesh, MESH_SERVING_MAX_LOADED_MODELS="1", MESH_API_TOKEN=LRU_TOKEN)
        ),
        "workers": ServingServer(root / "workers", server_env(mesh, MESH_SERVING_WORKERS="2")),
    }
    try:
        for server in started.values():
            server.start()
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def versions(mesh: Mesh, servers: dict[str, ServingServer]) -> Mesh:
    """Version 1 of the demo's and the sensors' model promoted and announced while the servers boot, and
    the versions the tests promote later trained with them, so that a promotion during a test is only
    the registry's part (register, move the alias, announce)."""
    demo_1, demo_2 = mesh.train((DEMO, 1), (DEMO, 2))
    promote_and_announce(mesh.settings, mesh.client, demo_1)
    sensors_1, sensors_2, late_1 = mesh.train((SENSORS, 1), (SENSORS, 2), (LATE, 4))
    promote_and_announce(mesh.settings, mesh.client, sensors_1)
    mesh.pending = {DEMO: [demo_2], SENSORS: [sensors_2], LATE: [late_1]}
    return mesh


def served(server: ServingServer) -> dict[str, dict[str, Any]]:
    """GET /models, by name ({} while the server does not answer)."""
    try:
        response = httpx.get(f"{server.url}/models", timeout=5)
    except httpx.HTTPError:
        return {}
    return {m["name"]: m for m in response.json()["models"]} if response.status_code == 200 else {}


def loaded_versions(server: ServingServer) -> dict[str, str]:
    return {name: m["version"] for name, m in served(server).items() if m["loaded"]}


def wait_loaded(server: ServingServer, names: set[str], timeout: float = 120) -> dict[str, str]:
    """Wait for ``names`` to be loaded; their versions."""
    wait_until(server.alive, timeout=timeout, what="the serving server")
    found = wait_until(
        lambda: (v := loaded_versions(server)) and names <= set(v) and v,
        timeout=timeout,
        what=f"{sorted(names)} loaded ({server.log_tail(500)})",
    )
    return {name: found[name] for name in names}


def predict(url: str, name: str | None, *, token: str | None = None, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"features": RECORDS.get(name or DEMO, EXAMPLE_RECORD), **extra}
    if name is not None:
        body["model"] = name
    return httpx.post(f"{url}/predict", json=body, headers=bearer_header(token), timeout=30)


# --- one server, several models ------------------------------------------------------------------------


def test_two_models_of_different_datasets_are_served_side_by_side(
    servers: dict[str, ServingServer], versions: Mesh
) -> None:
    main = servers["main"]
    current = wait_loaded(main, {DEMO, SENSORS})
    listed = served(main)
    assert {listed[n]["dataset"] for n in (DEMO, SENSORS)} == {"demo", "sensors"}
    assert all(listed[n]["provenance"]["version"] == current[n] for n in (DEMO, SENSORS))

    for name in (DEMO, SENSORS):
        response = predict(main.url, name)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"]["name"] == name and body["model"]["version"] == current[name]
        assert response.headers["x-model-version"] == f"{name}/{current[name]}"
        assert "feature_set=" in response.headers["x-model-lineage"]
        assert response.headers["x-serving-worker"].isdigit()
        assert body["prediction"] in (0, 1) and 0.0 <= body["probability"] <= 1.0

        batch = httpx.post(
            f"{main.url}/predict_batch", json={"model": name, "records": [RECORDS[name]] * 3}, timeout=30
        )
        assert batch.status_code == 200, batch.text
        assert len(batch.json()["predictions"]) == 3 and batch.json()["model"]["name"] == name

        detail = httpx.get(f"{main.url}/models/{name}", timeout=5)
        assert detail.status_code == 200 and detail.json()["loaded"] is True
        assert detail.json()["inputs"] == list(RECORDS[name])

    # Each model validates against its own dataset's inputs.
    crossed = httpx.post(
        f"{main.url}/predict", json={"model": SENSORS, "features": EXAMPLE_RECORD}, timeout=30
    )
    assert crossed.status_code == 422 and crossed.json()["field"].startswith("features.")

    # With two models served a request must name one; an unknown one is named back.
    unnamed = predict(main.url, None)
    assert unnamed.status_code == 422, unnamed.text
    assert unnamed.json()["field"] == "model" and {DEMO, SENSORS} <= set(unnamed.json()["served"])
    unnamed_batch = httpx.post(f"{main.url}/predict_batch", json={"records": [EXAMPLE_RECORD]}, timeout=30)
    assert unnamed_batch.status_code == 422 and unnamed_batch.json()["field"] == "model"
    unknown = predict(main.url, "no-such-model")
    assert unknown.status_code == 404 and unknown.json()["model"] == "no-such-model"
    assert "no-such-model" in unknown.json()["error"]
    assert httpx.get(f"{main.url}/models/no-such-model", timeout=5).status_code == 404
    one = httpx.get(f"{main.url}/model", timeout=5)
    assert one.status_code == 409 and {DEMO, SENSORS} <= set(one.json()["served"])


def test_each_model_is_hot_swapped_under_load_without_a_failed_request(
    servers: dict[str, ServingServer], versions: Mesh
) -> None:
    main = servers["main"]
    before = wait_loaded(main, {DEMO, SENSORS})
    after: dict[str, str] = {}

    async def client(index: int, stop: asyncio.Event, log: list[tuple[str, int, str]]) -> None:
        names = itertools.cycle([DEMO, SENSORS] if index % 2 else [SENSORS, DEMO])
        async with httpx.AsyncClient(base_url=main.url, timeout=30) as http:
            while not stop.is_set():
                name = next(names)
                try:
                    response = await http.post("/predict", json={"model": name, "features": RECORDS[name]})
                    version = response.headers.get("x-model-version", "")
                    log.append((name, response.status_code, version))
                except httpx.HTTPError as exc:
                    log.append((name, 0, type(exc).__name__))

    async def scenario() -> list[list[tuple[str, int, str]]]:
        stop = asyncio.Event()
        logs: list[list[tuple[str, int, str]]] = [[] for _ in range(4)]
        tasks = [asyncio.create_task(client(i, stop, log)) for i, log in enumerate(logs)]
        await asyncio.sleep(0.5)
        promoted = await asyncio.gather(
            asyncio.to_thread(versions.promote_next, DEMO), asyncio.to_thread(versions.promote_next, SENSORS)
        )
        after.update({p.model_name: p.version for p in promoted})
        expected = {f"{name}/{version}" for name, version in after.items()}

        async def swapped() -> bool:
            return expected <= {version for log in logs for _, _, version in log[-20:]}

        try:
            await wait_for(swapped, timeout=PROMOTION_BOUND_S, what="both swaps, as the clients see them")
            await asyncio.sleep(1.0)  # keep the load on after the swaps
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        return logs

    logs = asyncio.run(scenario())
    responses = [entry for log in logs for entry in log]
    failures = [entry for entry in responses if entry[1] != 200]
    assert not failures, f"{len(failures)} of {len(responses)} requests failed: {failures[:5]}"
    assert len(responses) >= 200, len(responses)
    for name in (DEMO, SENSORS):
        assert after[name] != before[name]
        seen = {version for n, _, version in responses if n == name}
        assert seen == {f"{name}/{before[name]}", f"{name}/{after[name]}"}, seen
        for log in logs:  # sequential requests: each model's version switches once, old to new
            mine = [version for n, _, version in log if n == name]
            switches = sum(1 for a, b in itertools.pairwise(mine) if a != b)
            assert switches == 1 and mine[-1] == f"{name}/{after[name]}", mine
    now = loaded_versions(main)
    assert {name: now[name] for name in after} == after


def _tensors(record: dict[str, Any], rows: int) -> list[dict[str, Any]]:
    """``rows`` copies of ``record`` as the Open Inference Protocol's input tensors, one per field."""
    return [
        {"name": name, "shape": [rows], "datatype": "BYTES" if isinstance(value, str) else "FP64",
         "data": [value] * rows}
        for name, value in record.items()
    ]  # fmt: skip


def test_open_inference_protocol_clients_are_answered_like_the_mesh_own(
    servers: dict[str, ServingServer], versions: Mesh
) -> None:
    main = servers["main"]
    current = wait_loaded(main, {DEMO, SENSORS})
    assert httpx.get(f"{main.url}/v2/health/live", timeout=5).json() == {"live": True}
    assert httpx.get(f"{main.url}/v2/health/ready", timeout=5).status_code == 200
    for name in (DEMO, SENSORS):
        ready = httpx.get(f"{main.url}/v2/models/{name}/ready", timeout=5)
        assert ready.status_code == 200 and ready.json() == {"name": name, "ready": True}
        metadata = httpx.get(f"{main.url}/v2/models/{name}", timeout=5).json()
        assert metadata["versions"] == [current[name]]
        assert [i["name"] for i in metadata["inputs"]] == list(RECORDS[name])

        body = {"id": "req-1", "inputs": _tensors(RECORDS[name], 3)}
        answer = httpx.post(f"{main.url}/v2/models/{name}/infer", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert result["model_name"] == name and result["model_version"] == current[name]
        assert result["id"] == "req-1"
        outputs = {o["name"]: o for o in result["outputs"]}
        assert outputs["prediction"]["shape"] == [3] and outputs["probability"]["datatype"] == "FP64"
        mesh_answer = predict(main.url, name).json()  # the same record through the mesh's own route
        assert outputs["probability"]["data"][0] == pytest.approx(mesh_answer["probability"])
        assert answer.headers["x-model-version"] == f"{name}/{current[name]}"
        pinned = f"{main.url}/v2/models/{name}/versions/{current[name]}/infer"
        assert httpx.post(pinned, json=body, timeout=30).status_code == 200

    wrong_version = httpx.post(
        f"{main.url}/v2/models/{DEMO}/versions/999/infer", json={"inputs": _tensors(EXAMPLE_RECORD, 1)}
    )
    assert wrong_version.status_code == 404 and wrong_version.json()["field"] == "version"
    ragged = _tensors(EXAMPLE_RECORD, 2)
    ragged[0]["data"] = ragged[0]["data"][:1]
    bad_shape = httpx.post(f"{main.url}/v2/models/{DEMO}/infer", json={"inputs": ragged}, timeout=30)
    assert bad_shape.status_code == 400 and bad_shape.json()["field"] == "inputs[0].shape"
    mars = _tensors({**EXAMPLE_RECORD, "region": "mars"}, 2)
    bad_value = httpx.post(f"{main.url}/v2/models/{DEMO}/infer", json={"inputs": mars}, timeout=30)
    assert bad_value.status_code == 400 and bad_value.json()["field"] == "inputs[0].region"
    unknown = httpx.post(f"{main.url}/v2/models/nope/infer", json={"inputs": mars}, timeout=30)
    assert unknown.status_code == 404

    # A row as the data holds it: the dataset's id, timestamp and label are no model inputs, accepted and
    # ignored over both protocols; a name the dataset does not declare (a typo) is refused, naming it.
    row = {**EXAMPLE_RECORD, "customer_id": "c-1", "event_time": "2026-11-25T10:00:00", "churned": 1}
    alone = predict(main.url, DEMO).json()["probability"]
    as_data = httpx.post(f"{main.url}/predict", json={"model": DEMO, "features": row}, timeout=30)
    assert as_data.status_code == 200, as_data.text
    assert as_data.json()["probability"] == pytest.approx(alone)
    as_tensors = httpx.post(
        f"{main.url}/v2/models/{DEMO}/infer", json={"inputs": _tensors(row, 1)}, timeout=30
    )
    assert as_tensors.status_code == 200, as_tensors.text
    typo = httpx.post(
        f"{main.url}/predict",
        json={"model": DEMO, "features": {**EXAMPLE_RECORD, "regoin": "north"}},
        timeout=30,
    )
    assert typo.status_code == 422 and typo.json()["field"] == "features.regoin"


def test_tritonclient_with_its_defaults_gets_binary_tensors_back(
    servers: dict[str, ServingServer], versions: Mesh
) -> None:
    """tritonclient.http, the common Open Inference Protocol client, sends its inputs and asks for every
    output in the binary tensor data extension unless told otherwise; asked-for outputs are the only ones."""
    import numpy as np
    import tritonclient.http as triton

    main = servers["main"]
    current = wait_loaded(main, {DEMO})
    client = triton.InferenceServerClient(main.url.removeprefix("http://"))
    assert client.is_server_ready() and client.is_model_ready(DEMO)
    assert client.get_model_metadata(DEMO)["versions"] == [current[DEMO]]
    inputs = []
    for name, value in EXAMPLE_RECORD.items():
        text = isinstance(value, str)
        column = np.array([value.encode() if text else value] * 3, dtype=object if text else np.float64)
        tensor = triton.InferInput(name, [3], "BYTES" if text else "FP64")
        tensor.set_data_from_numpy(column)  # binary by default
        inputs.append(tensor)

    result = client.infer(DEMO, inputs)  # no outputs named: all of them, in binary
    mesh_answer = predict(main.url, DEMO).json()
    assert result.as_numpy("probability").tolist() == pytest.approx([mesh_answer["probability"]] * 3)
    assert result.as_numpy("prediction").tolist() == [mesh_answer["prediction"]] * 3  # INT64: 0 or 1
    assert result.as_numpy("probabilities").shape == (3, 2)
    assert len(set(result.as_numpy("request_id"))) == 3
    assert all("binary_data_size" in output["parameters"] for output in result.get_response()["outputs"])

    only = [triton.InferRequestedOutput("probability", binary_data=False)]
    result = client.infer(DEMO, inputs, outputs=only, request_id="req-7")
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["probability"] and response["id"] == "req-7"
    assert response["outputs"][0]["data"] == pytest.approx([mesh_answer["probability"]] * 3)
    with pytest.raises(triton.InferenceServerException, match=r"outputs\[0\]\.name: must be one of"):
        client.infer(DEMO, inputs, outputs=[triton.InferRequestedOutput("nope")])
    client.close()


def batched_records(server: ServingServer) -> tuple[float, float]:
    """From the server's /metrics: single-record predictions scored in batches, and how many batches."""
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    samples = [
        sample
        for family in text_string_to_metric_families(text)
        if family.name == "mesh_serving_batch_records"
        for sample in family.samples
    ]
    records = sum(s.value for s in samples if s.name.endswith("_sum"))
    return records, sum(s.value for s in samples if s.name.endswith("_count"))


def test_concurrent_single_records_are_batched_and_each_answered_as_alone(
    servers: dict[str, ServingServer], versions: Mesh
) -> None:
    main = servers["main"]
    wait_loaded(main, {DEMO, SENSORS})
    names = [DEMO, SENSORS] * 32
    bad = 17  # one record of the demo's model that does not fit its inputs
    bodies = [{"model": n, "features": dict(RECORDS[n])} for n in names]
    bodies[bad]["features"]["tenure_months"] = -3
    records_before, batches_before = batched_records(main)

    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(bodies))
        async with httpx.AsyncClient(base_url=main.url, timeout=30, limits=limits) as http:
            return await asyncio.gather(*(http.post("/predict", json=body) for body in bodies))

    responses = asyncio.run(send_all())
    alone = {name: predict(main.url, name).json() for name in (DEMO, SENSORS)}
    for index, (name, response) in enumerate(zip(names, responses, strict=True)):
        if index == bad:
            assert response.status_code == 422 and response.json()["field"] == "features.tenure_months"
            continue
        assert response.status_code == 200, response.text
        body = response.json()
        assert response.headers["x-model-version"] == f"{name}/{body['model']['version']}"
        assert body["model"]["name"] == name
        assert body["probability"] == pytest.approx(alone[name]["probability"])
    assert len({r.headers["x-request-id"] for r in responses if r.status_code == 200}) == len(names) - 1
    records, batches = batched_records(main)
    scored = records - records_before
    assert scored == len(names) + 2  # every record once (the bad one too), and the two sent alone
    assert batches - batches_before < scored, "no two concurrent records were scored together"


def test_a_model_declared_and_promoted_while_serving_is_served_without_a_restart(
    servers: dict[str, ServingServer], versions: Mesh
) -> None:
    main = servers["main"]
    wait_loaded(main, {DEMO, SENSORS})
    assert main.proc is not None
    pid = main.proc.pid
    unknown = predict(main.url, LATE)
    assert unknown.status_code == 404 and unknown.json()["model"] == LATE

    (versions.config_dir / "models" / "sensors-late.yaml").write_text(sensors_model(LATE))
    promoted = versions.promote_next(LATE)

    def answered() -> httpx.Response | None:
        response = predict(main.url, LATE)
        assert response.status_code in (200, 404, 503), response.text
        return response if response.status_code == 200 else None

    response = wait_until(answered, timeout=PROMOTION_BOUND_S, what=f"{LATE} served")
    assert response.headers["x-model-version"] == f"{LATE}/{promoted.version}"
    assert served(main)[LATE]["loaded"] is True
    assert predict(main.url, DEMO).status_code == 200  # the others still serve
    assert main.proc.pid == pid and main.proc.poll() is None


# --- the bound on loaded models -------------------------------------------------------------------------


def test_past_the_bound_the_least_recently_used_model_unloads_and_reloads_on_demand(
    servers: dict[str, ServingServer], versions: Mesh
) -> None:
    lru = servers["lru"]
    wait_until(lru.alive, timeout=120, what="the lru server")

    def one_of_several_loaded() -> dict[str, dict[str, Any]] | None:
        listing = served(lru)
        loaded = sum(m["loaded"] for m in listing.values())
        return listing if {DEMO, SENSORS} <= set(listing) and loaded == 1 else None

    listing = wait_until(one_of_several_loaded, timeout=120, what="one model loaded of several served")
    # Its predictions need the token; its models' metadata and probes do not.
    for refused in (
        predict(lru.url, DEMO),
        predict(lru.url, DEMO, token="not-the-token"),
        httpx.post(f"{lru.url}/predict_batch", json={"records": [EXAMPLE_RECORD]}, timeout=30),
        httpx.post(f"{lru.url}/v2/models/{DEMO}/infer", json={"inputs": []}, timeout=30),
    ):
        assert refused.status_code == 401 and refused.json()["field"] == "authorization", refused.text
    for open_path in ("/readyz", "/models", f"/v2/models/{DEMO}", "/docs.json"):
        assert httpx.get(f"{lru.url}{open_path}", timeout=10).status_code == 200, open_path
    [resident] = [name for name, m in listing.items() if m["loaded"]]
    evicted = DEMO if resident != DEMO else SENSORS
    assert listing[evicted]["version"] and listing[evicted]["loaded"] is False

    for wanted, other in ((evicted, resident), (resident, evicted)):
        refused = predict(lru.url, wanted, token=LRU_TOKEN)
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["model"] == wanted and wanted in refused.json()["error"]

        def answered(name: str = wanted) -> httpx.Response | None:
            response = predict(lru.url, name, token=LRU_TOKEN)
            assert response.status_code in (200, 503), response.text
            if response.status_code == 503:
                assert "retry-after" in response.headers
            return response if response.status_code == 200 else None

        response = wait_until(answered, timeout=60, what=f"{wanted} loaded on demand")
        assert response.headers["x-model-version"].startswith(f"{wanted}/")
        now = served(lru)
        assert now[wanted]["loaded"] is True and now[other]["loaded"] is False
        assert sum(m["loaded"] for m in now.values()) == 1


# --- several workers ------------------------------------------------------------------------------------


async def _worker_versions(url: str, name: str, requests: int = 24) -> dict[str, str]:
    """The version each worker answered ``name`` with, over ``requests`` concurrent fresh connections."""
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        responses = await asyncio.gather(
            *(http.post("/predict", json={"model": name, "features": RECORDS[name]}) for _ in range(requests))
        )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    return {r.headers["x-serving-worker"]: r.headers["x-model-version"] for r in responses}


def test_every_worker_serves_a_promotion_within_a_bound(
    servers: dict[str, ServingServer], versions: Mesh
) -> None:
    workers = servers["workers"]
    wait_loaded(workers, {DEMO, SENSORS})

    def both_workers() -> dict[str, str] | None:
        seen = asyncio.run(_worker_versions(workers.url, SENSORS))
        return seen if len(seen) == 2 else None

    before = wait_until(both_workers, timeout=60, what="both workers answering")
    promoted = versions.promote_another(SENSORS)
    new = f"{SENSORS}/{promoted.version}"
    assert set(before.values()) != {new}
    started = time.monotonic()
    latest: dict[str, str] = {}

    def every_worker_swapped() -> bool:
        latest.update(asyncio.run(_worker_versions(workers.url, SENSORS)))
        return len(latest) == 2 and set(latest.values()) == {new}

    wait_until(every_worker_swapped, timeout=PROMOTION_BOUND_S, what=f"both workers serving {new}")
    elapsed = time.monotonic() - started
    assert set(latest) == set(before), (latest, before)  # the same two worker processes, swapped in place
    assert elapsed < PROMOTION_BOUND_S
    assert set(asyncio.run(_worker_versions(workers.url, SENSORS)).values()) == {new}  # none went back
