"""Bring your own data, as a new user would: three real datasets that scikit-learn ships in its wheel (no
download), with their own column names (spaces, slashes) and label types, each of another task kind and
estimator family, through the real mesh: the session's valkey and MLflow server, ingest, features,
training, registry and monitor in this process, serving as ``mesh run serving`` (BentoML over HTTP).

* ``wine``: multiclass, string labels (the three cultivars by name), XGBoost.
* ``diabetes``: regression, LightGBM; with a time column (when each patient was seen, as ISO text), which
  is declared as the parts of it that vary, and sent to serving as text.
* ``tumours``: binary, string labels (malignant / benign), a scikit-learn class named by import path.

Each dataset is declared by ``mesh dataset init`` from its CSV (the estimator then edited in the model
file, as a user would) and checked by ``mesh dataset check``; ``mesh ingest`` uploads it; the services
train, gate, register and serve it with no restart. Then: serving answers per task kind, MLflow's own
``pyfunc`` gives the same answers, a second version hot-swaps in under load without a failed request,
and the monitor scores live traffic with the task's metric and the drift of the model's outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import bentoml
import httpx
import mlflow
import numpy as np
import polars as pl
import pytest
import yaml
from sklearn import datasets as sk_datasets
from typer.testing import CliRunner, Result

from shared.ml.modeling import load_model_config
from shared.ops.cli import app
from shared.runtime.mlflow_client import mlflow_client
from shared.runtime.retry import wait_until
from shared.runtime.settings import MeshSettings
from tests.support.champions import promote_and_announce, train_version
from tests.support.servers import mesh
from tests.support.serving import ServingServer, serving_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

RUN = uuid.uuid4().hex[:6]  # MLflow is shared with other tests: model names are this run's own


@dataclass(frozen=True)
class Case:
    dataset: str
    target: str
    task: str
    estimator: dict[str, Any]
    metric: str  # what the monitor scores live traffic with, by default for the task

    @property
    def model(self) -> str:
        return f"{self.dataset}-{RUN}"


XGBOOST = {"kind": "xgboost", "params": {"n_estimators": 40, "max_depth": 3}}
LIGHTGBM = {"kind": "lightgbm", "params": {"n_estimators": 60, "num_leaves": 8, "min_child_samples": 10}}
BY_IMPORT_PATH = {"class": "sklearn.linear_model.LogisticRegression", "params": {"C": 0.5}, "scale": True}
CASES = (
    Case("wine", "cultivar", "multiclass", XGBOOST, "macro_f1"),
    Case("diabetes", "progression", "regression", LIGHTGBM, "rmse"),
    Case("tumours", "diagnosis", "binary", BY_IMPORT_PATH, "accuracy"),
)


def frame_of(case: Case) -> pl.DataFrame:
    """The dataset as scikit-learn ships it, with the label as a user's file would carry it."""
    if case.dataset == "wine":
        bunch = sk_datasets.load_wine(as_frame=True)
        labels = np.array(["barolo", "grignolino", "barbera"])[bunch.target.to_numpy()]
    elif case.dataset == "diabetes":
        bunch = sk_datasets.load_diabetes(as_frame=True)
        labels = bunch.target.to_numpy().astype(float)
        # When each patient was seen, as a file holds it: ISO text with the clinic's offset.
        start = datetime(2025, 1, 6, 8, 0, tzinfo=timezone(timedelta(hours=1)))
        visits = [(start + timedelta(days=i, minutes=67 * i)).isoformat() for i in range(len(labels))]
        return pl.from_pandas(bunch.data).with_columns(
            pl.Series("seen at", visits), pl.Series(case.target, labels)
        )
    else:
        bunch = sk_datasets.load_breast_cancer(as_frame=True)
        labels = np.array(["malignant", "benign"])[bunch.target.to_numpy()]
    return pl.from_pandas(bunch.data).with_columns(pl.Series(case.target, labels))


@dataclass
class Mesh:
    settings: MeshSettings
    root: Path
    urls: dict[str, str]
    serving: ServingServer

    def cli(self, *args: str) -> Result:
        env = {"MESH_CONFIG_DIR": str(self.settings.config_dir), "COLUMNS": "200"}
        return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture(scope="module")
async def running(
    redis_port: int, mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Mesh]:
    root = tmp_path_factory.mktemp("byod")
    config_dir = root / "config"
    for kind in ("datasets", "features", "models", "monitor"):
        (config_dir / kind).mkdir(parents=True)
    settings = MeshSettings(
        redis_port=redis_port,
        mlflow_tracking_uri=mlflow_uri,
        state_dir=root / "state",
        data_root=root / "data",
        config_dir=config_dir,
        bus_block_ms=200,
        bus_graceful_timeout_s=5,
        log_level="WARNING",
    )
    serving = ServingServer(root / "serving", serving_env(settings)).start()
    try:
        async with mesh(settings, ("ingest", "features", "training", "registry", "monitor")) as urls:
            yield Mesh(settings, root, urls, serving)
    finally:
        serving.stop()


def declare(running: Mesh, case: Case) -> Path:
    """``mesh dataset init`` on the case's CSV; the estimator set; ``mesh dataset check``."""
    csv = running.root / f"{case.dataset}.csv"
    frame_of(case).write_csv(csv)
    result = running.cli("dataset", "init", str(csv), "--name", case.dataset, "--target", case.target)
    assert result.exit_code == 0, result.output
    model_file = running.settings.config_dir / "models" / f"{case.dataset}.yaml"
    model = yaml.safe_load(model_file.read_text())
    assert model["task"] == case.task  # inferred from the target column
    if case.dataset == "diabetes":  # the visit's month, weekday and hour (in UTC) are features
        features = yaml.safe_load((running.settings.config_dir / "features" / "diabetes.yaml").read_text())
        parts = {f["part"] for f in features["features"] if f["op"] == "datetime_part"}
        assert parts == {"month", "weekday", "hour"}
    monitor_file = running.settings.config_dir / "monitor" / f"{case.dataset}.yaml"
    monitor = yaml.safe_load(monitor_file.read_text())
    model_file.write_text(yaml.safe_dump({**model, "model_name": case.model, "estimator": case.estimator}))
    monitor_file.write_text(yaml.safe_dump({**monitor, "model_name": case.model}))
    checked = running.cli("dataset", "check", case.dataset)
    assert checked.exit_code == 0, checked.output
    return csv


def served(url: str, model: str) -> dict[str, Any] | None:
    try:
        body: dict[str, Any] = httpx.get(f"{url}/models/{model}", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return None
    return body if body.get("loaded") else None


def predict_batch(url: str, model: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    response = httpx.post(f"{url}/predict_batch", json={"model": model, "records": records}, timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="module")
async def champions(running: Mesh) -> dict[str, Path]:
    """Every case declared, ingested with ``mesh ingest`` and served: what the mesh did on its own."""
    files = {case.dataset: declare(running, case) for case in CASES}
    for case in CASES:
        result = await asyncio.to_thread(
            running.cli, "ingest", str(files[case.dataset]), "--dataset", case.dataset,
            "--url", running.urls["ingest"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    for case in CASES:
        await asyncio.to_thread(
            wait_until,
            lambda case=case: served(running.serving.url, case.model),
            timeout=300,
            what=f"{case.model} served ({running.serving.log_tail(800)})",
        )
    return files


@pytest.mark.parametrize("case", CASES, ids=[c.dataset for c in CASES])
async def test_the_served_champion_answers_as_its_task_says_and_as_pyfunc_does(
    running: Mesh, champions: dict[str, Path], case: Case
) -> None:
    frame = frame_of(case)
    records = frame.drop(case.target).head(40).to_dicts()
    body = await asyncio.to_thread(predict_batch, running.serving.url, case.model, records)
    answers = body["predictions"]
    assert body["model"]["name"] == case.model and body["model"]["version"] == "1"
    truth = frame[case.target].head(40).to_list()
    if case.task == "regression":
        values = [a["prediction"] for a in answers]
        assert all(isinstance(v, float) and math.isfinite(v) for v in values)
        assert "probabilities" not in answers[0]
        # Better than predicting the mean on rows it trained on or held out (r2 > 0).
        assert np.mean((np.array(values) - truth) ** 2) < np.var(truth)
    else:
        classes = sorted(set(frame[case.target].to_list()))
        for answer in answers:
            assert answer["prediction"] in classes
            assert sorted(answer["probabilities"]) == classes
            assert math.isclose(sum(answer["probabilities"].values()), 1.0, abs_tol=1e-6)
            assert answer["prediction"] == max(answer["probabilities"], key=answer["probabilities"].get)
        assert ("probability" in answers[0]) is (case.task == "binary")
        assert np.mean([a["prediction"] == t for a, t in zip(answers, truth, strict=True)]) > 0.8

    # MLflow's own client, on the registered champion: the same answers as serving gives.
    mlflow.set_tracking_uri(running.settings.effective_mlflow_uri)
    pyfunc = await asyncio.to_thread(mlflow.pyfunc.load_model, f"models:/{case.model}@champion")
    # The signature declares a time column as datetime, and MLflow's enforcement of it takes datetimes
    # without a zone only (no text, no zone): pyfunc's users send times in UTC, as the mesh holds them.
    as_frame = pl.DataFrame(records).with_columns(
        pl.col(c).str.to_datetime(time_zone="UTC").dt.replace_time_zone(None)
        for c in {"seen at"} & set(records[0])
    )
    from_pyfunc = pyfunc.predict(as_frame.to_pandas())
    served_answers = [a["prediction"] for a in answers]
    if case.task == "regression":
        assert np.allclose(np.asarray(from_pyfunc, dtype=float), served_answers, rtol=1e-9, atol=1e-9)
    else:
        assert list(from_pyfunc) == served_answers

    # BentoML's own client, with named arguments, as its users call a service.
    with bentoml.SyncHTTPClient(running.serving.url, server_ready_timeout=30) as bento:
        one = await asyncio.to_thread(bento.predict, features=records[0], model=case.model)
    assert one["prediction"] == answers[0]["prediction"] or case.task == "regression"
    if case.task == "regression":
        assert one["prediction"] == pytest.approx(answers[0]["prediction"], rel=1e-9)
    assert one["model"]["version"] == "1"

    # The registry judged it with the task's metrics, on its holdout.
    shown = running.cli("models", "show", case.model, "--json")
    if shown.exit_code == 0:
        metrics = json.loads(shown.stdout)["champion"]["metrics"]
        expected = {"multiclass": "macro_f1", "regression": "rmse", "binary": "roc_auc"}[case.task]
        assert expected in metrics


@pytest.mark.parametrize("case", CASES, ids=[c.dataset for c in CASES])
async def test_a_second_version_hot_swaps_in_under_load_without_a_failed_request(
    running: Mesh, champions: dict[str, Path], case: Case
) -> None:
    settings = running.settings
    config = load_model_config(settings.config_dir, case.dataset)
    sample = frame_of(case).sample(fraction=0.9, seed=11)
    client = mlflow_client(settings)
    trained = await asyncio.to_thread(
        train_version, client, settings.config_dir, settings.effective_data_root, config, sample
    )
    records = frame_of(case).drop(case.target).head(5).to_dicts()
    failures: list[str] = []
    versions: list[str] = []
    stop = asyncio.Event()

    async def load() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            while not stop.is_set():
                response = await http.post(
                    f"{running.serving.url}/predict_batch", json={"model": case.model, "records": records}
                )
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                else:
                    versions.append(response.json()["model"]["version"])

    clients = [asyncio.create_task(load()) for _ in range(4)]
    try:
        await asyncio.sleep(0.5)
        promoted = await asyncio.to_thread(promote_and_announce, settings, client, trained)
        await asyncio.to_thread(
            wait_until,
            lambda: (served(running.serving.url, case.model) or {}).get("version") == promoted.version,
            timeout=120,
            what=f"{case.model} version {promoted.version} served",
        )
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*clients)
    assert failures == []
    assert versions[0] != promoted.version and versions[-1] == promoted.version
    # Each answer names one of the two versions, and once the new one answers the old one never does.
    first_new = versions.index(promoted.version)
    assert set(versions[first_new:]) == {promoted.version}


@pytest.mark.parametrize("case", CASES, ids=[c.dataset for c in CASES])
async def test_the_monitor_scores_live_traffic_with_the_tasks_metric_and_output_drift(
    running: Mesh, champions: dict[str, Path], case: Case
) -> None:
    frame = frame_of(case)
    monitor = yaml.safe_load((running.settings.config_dir / "monitor" / f"{case.dataset}.yaml").read_text())
    size = int(monitor["window"]["size"])
    rows = frame.sample(n=size, with_replacement=True, seed=5)
    monitor_url = running.urls["monitor"]

    async def predicted() -> list[dict[str, Any]]:
        body = await asyncio.to_thread(
            predict_batch, running.serving.url, case.model, rows.drop(case.target).to_dicts()
        )
        answers: list[dict[str, Any]] = body["predictions"]
        return answers

    def latest_where(test: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            latest = httpx.get(f"{monitor_url}/drift/{case.model}", timeout=5).json().get("latest")
            if latest and test(latest):
                return dict(latest)
        return None

    # A full window of predictions: drift of the inputs and of what the model says, before any label.
    answers = await predicted()
    drifted = await asyncio.to_thread(
        wait_until,
        lambda: latest_where(lambda w: "@prediction" in w["scores"]),
        timeout=120,
        what=f"{case.model} window scored for drift",
    )
    # Every input but a time, which drifts by nature (live times are later): its parts reach the model.
    times = {"seen at"} & set(frame.columns)
    assert set(frame.drop(case.target, *times).columns) <= set(drifted["scores"])
    assert not times & set(drifted["scores"])
    # Then the ground truth for them: the window's labelled rows are scored with the task's metric.
    labels = [
        {"request_id": answer["request_id"], "label": truth}
        for answer, truth in zip(answers, rows[case.target].to_list(), strict=True)
    ]
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(f"{monitor_url}/labels", json={"labels": labels})
    assert response.status_code == 202, response.text
    await predicted()
    latest = await asyncio.to_thread(
        wait_until,
        lambda: latest_where(lambda w: w.get("performance") is not None),
        timeout=120,
        what=f"{case.model} window scored on labels",
    )
    assert latest["performance_metric"] == case.metric
    # Labelled with the truth: the model does about as well as on its holdout, no decay to fire on.
    assert not [test for test in latest["decision"]["fired"] if test.startswith("performance")]
