"""The ``mesh`` operator verbs against a real mesh: the session's valkey and MLflow server, the registry and
the monitor in this process (tests/support/servers.py), serving as ``mesh run serving`` (BentoML) in a
subprocess, and ``mesh watch`` in another.

One model of the small synthetic ``sensors`` dataset (a logistic regression, fast to train), named per run
(MLflow is shared with other tests): two versions trained and promoted as the registry promotes them, so
version 2 is the champion and version 1 the previous one when the tests start. The tests share that mesh
and run in order: the watch test rolls back to version 1, the promotion test promotes version 2 again.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner, Result

from shared import events
from shared.bus.delivery import entry_body
from shared.events import Stream, parse_event
from shared.ml.modeling import load_model_config
from shared.ops.cli import app
from shared.runtime.mlflow_client import mlflow_client
from shared.runtime.retry import wait_for, wait_until
from shared.runtime.settings import MeshSettings
from tests.support.champions import (
    SENSORS_RECORD,
    promote_and_announce,
    sensors_batch,
    train_versions,
    write_sensors_config,
)
from tests.support.data import CONFIG_DIR
from tests.support.servers import mesh
from tests.support.serving import ServingServer, serving_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MODEL = f"sensors-cli-{uuid.uuid4().hex[:6]}"
TOKEN = f"token-{uuid.uuid4().hex}"
INPUTS = ("temperature", "vibration", "site")


@dataclass
class Operated:
    """The running mesh: its settings, and the environment the ``mesh`` CLI finds it by."""

    settings: MeshSettings
    env: dict[str, str | None]
    serving: ServingServer
    redis: aioredis.Redis

    async def cli(self, *args: str) -> Result:
        """``mesh ARGS`` in a thread (the services in this event loop keep answering meanwhile)."""
        return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=self.env)

    async def ok(self, *args: str) -> Result:
        result = await self.cli(*args)
        assert result.exit_code == 0, result.output
        return result

    async def json(self, *args: str) -> Any:
        return json.loads((await self.ok(*args, "--json")).stdout)


def served_version(url: str) -> str | None:
    """The version of MODEL serving has loaded; None before (or while serving does not answer)."""
    try:
        body = httpx.get(f"{url}/models/{MODEL}", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return None
    return str(body["version"]) if body.get("loaded") else None


@pytest.fixture(scope="module")
async def operated(
    redis_port: int, mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Operated]:
    root = tmp_path_factory.mktemp("cli-operate")
    config_dir = root / "config"
    shutil.copytree(CONFIG_DIR, config_dir)
    write_sensors_config(config_dir, MODEL)
    for kind in ("models", "monitor"):  # the one model, and the one monitor config, are the sensors'
        for path in (config_dir / kind).glob("*.yaml"):
            if path.stem != "sensors":
                path.unlink()
    settings = MeshSettings(
        redis_port=redis_port,
        mlflow_tracking_uri=mlflow_uri,
        state_dir=root / "state",
        data_root=root / "data",
        config_dir=config_dir,
        registry_token=TOKEN,
        bus_block_ms=200,
        bus_graceful_timeout_s=5,
        # structlog prints to whatever sys.stdout is as it logs: the in-process services' info lines
        # would land in the output of a CLI run that CliRunner is capturing meanwhile.
        log_level="WARNING",
    )
    # The CLI finds the token as it finds the local stack's: in the state dir.
    settings.state_dir.mkdir(parents=True)
    (settings.state_dir / "registry-token").write_text(TOKEN)
    serving = ServingServer(root / "serving", serving_env(settings)).start()  # boots while the versions train
    client = aioredis.from_url(settings.effective_redis_url)
    try:
        config = load_model_config(config_dir, "sensors")
        jobs = [(config, sensors_batch(600, seed)) for seed in (1, 2)]
        ml = mlflow_client(settings)
        trained = await asyncio.to_thread(train_versions, ml, config_dir, settings.effective_data_root, jobs)
        for version in trained:
            await asyncio.to_thread(promote_and_announce, settings, ml, version)
        async with mesh(settings, ("registry", "monitor")) as urls:
            await asyncio.to_thread(
                wait_until,
                lambda: served_version(serving.url) == "2",
                timeout=120,
                what=f"serving {MODEL} version 2 ({serving.log_tail(500)})",
            )
            env: dict[str, str | None] = {
                "MESH_HOST": "127.0.0.1",
                "MESH_REDIS_URL": settings.effective_redis_url,
                "MESH_MLFLOW_TRACKING_URI": mlflow_uri,
                "MESH_CONFIG_DIR": str(config_dir),
                "MESH_STATE_DIR": str(settings.state_dir),
                "MESH_REGISTRY_TOKEN": None,
                "MESH_SERVING_PORT": str(serving.port),
                "MESH_REGISTRY_PORT": urls["registry"].rsplit(":", 1)[1],
                "MESH_MONITOR_PORT": urls["monitor"].rsplit(":", 1)[1],
                "COLUMNS": "200",
            }
            yield Operated(settings, env, serving, client)
    finally:
        await client.aclose()
        serving.stop()


async def test_models_list_and_show_join_serving_the_registry_and_the_streams(operated: Operated) -> None:
    rows = await operated.json("models", "list")
    assert rows == [
        {"name": MODEL, "dataset": "sensors", "champion": "2", "previous": "1", "served": "2", "loaded": True}
    ]
    table = await operated.ok("models", "list")
    assert MODEL in table.stdout and "sensors" in table.stdout

    shown = await operated.json("models", "show", MODEL)
    champion, previous = shown["champion"], shown["previous"]
    assert (champion["version"], previous["version"]) == ("2", "1")
    assert champion["run_id"] != previous["run_id"]
    assert champion["feature_set_id"] and len(champion["snapshot_ids"]) == 1
    assert {"roc_auc", "accuracy"} <= set(champion["metrics"])
    assert shown["dataset"] == "sensors"
    assert shown["serving"]["version"] == "2" and shown["serving"]["loaded"] is True
    decision = shown["last_decision"]
    assert decision["decision"] == "promoted" and decision["version"] == "2"
    assert decision["previous_version"] == "1" and decision["run_id"] == champion["run_id"]
    text = await operated.ok("models", "show", MODEL)
    assert "last decision" in text.stdout and champion["run_id"] in text.stdout

    unknown = await operated.cli("models", "show", f"{MODEL}-nope")
    assert unknown.exit_code == 1 and "is unknown" in unknown.output


async def test_status_shows_services_streams_groups_dead_letters_and_models(operated: Operated) -> None:
    result = await operated.cli("status", "--json")
    # Ingest, features and training do not run in this mesh: not every service is ready.
    assert result.exit_code == 1, result.output
    status = json.loads(result.stdout)
    states = {row["service"]: row["state"] for row in status["services"]}
    assert states["registry"] == states["serving"] == states["monitor"] == "ready"
    assert states["ingest"] == states["training"] == "unreachable"
    groups = {(row["stream"], row["group"]): row for row in status["streams"]}
    # The registry's group on model.trained is read by its one replica here, and nothing waits in it.
    trained = groups[("model.trained", "registry")]
    assert trained["replicas"] == 1 and trained["pending"] == 0 and trained["lag"] == 0
    assert ("predictions", "monitor") in groups
    [model] = status["models"]
    assert (model["name"], model["champion"], model["served"]) == (MODEL, "2", "2")
    assert model["last_decision"]["decision"] == "promoted" and model["last_decision"]["version"] == "2"
    deadletter = [row for row in status["streams"] if row["stream"] == "deadletter"]
    assert status["dead_letters"] == deadletter[0]["length"]
    table = await operated.cli("status")
    for text in ("services", "streams", "model.trained", MODEL, "dead letters"):
        assert text in table.stdout, table.stdout


async def test_predict_answers_a_record_names_a_bad_field_and_scores_a_file(
    operated: Operated, tmp_path: Path
) -> None:
    answer = await operated.ok("predict", MODEL, "--json", json.dumps(SENSORS_RECORD))
    body = json.loads(answer.stdout)
    assert body["model"]["name"] == MODEL and body["model"]["version"] == "2"
    assert body["prediction"] in (0, 1) and 0.0 <= body["probability"] <= 1.0

    bad = await operated.cli("predict", MODEL, "--json", json.dumps({**SENSORS_RECORD, "site": "delta"}))
    assert bad.exit_code == 1, bad.output
    text = " ".join(bad.output.split())
    assert "serving answered 422" in text and "[field: " in text and "site" in text

    # A window's worth of traffic (the monitor's window: 500 rows), which the next test finds evaluated.
    records = tmp_path / "records.jsonl"
    frame = sensors_batch(500, seed=9).select(INPUTS)
    records.write_text("".join(json.dumps(row) + "\n" for row in frame.iter_rows(named=True)))
    batch = json.loads((await operated.ok("predict", MODEL, "--file", str(records))).stdout)
    assert len(batch["predictions"]) == 500 and batch["model"]["version"] == "2"


async def test_drift_shows_the_monitors_windows_and_opens_its_report(
    operated: Operated, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def evaluated() -> dict[str, Any] | None:
        summary: dict[str, Any] = await operated.json("drift", MODEL)
        return summary if summary["windows"] >= 1 else None

    summary = await wait_for(evaluated, timeout=60, what="the monitor's first window")
    assert summary["model_name"] == MODEL and "2" in summary["references"]  # 1 too: promoted earlier
    latest = summary["latest"]
    assert latest["model_version"] == "2" and latest["rows"] >= 200
    assert latest["decision"]["retrain"] is False and isinstance(latest["decision"]["reasons"], list)

    opened: list[str] = []

    def open_in_browser(url: str) -> bool:
        opened.append(url)
        return True

    monkeypatch.setattr("webbrowser.open", open_in_browser)
    shown = await operated.ok("drift", MODEL, "--open")
    assert "windows evaluated" in shown.stdout and "latest window" in shown.stdout
    [url] = opened
    assert url == f"http://127.0.0.1:{operated.env['MESH_MONITOR_PORT']}/drift/{MODEL}/report"
    report = await asyncio.to_thread(httpx.get, url, timeout=30)
    assert report.status_code == 200 and "<html" in report.text.lower()

    unknown = await operated.cli("drift", "no-such-model")
    assert unknown.exit_code == 1 and "[field: model]" in unknown.output


def watcher(operated: Operated, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update({k: v for k, v in operated.env.items() if v is not None})
    env["PYTHONUNBUFFERED"] = "1"
    mesh_exe = str(Path(sys.executable).parent / "mesh")
    return subprocess.Popen(
        [mesh_exe, "watch", "--json", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def published_events(client: aioredis.Redis, stream: Stream[Any], event_id: str) -> list[Any]:
    """The entries of ``stream`` carrying ``event_id``, parsed by the contracts as a consumer would (the
    session's Redis is shared: other tests may have left entries of their own, even invalid ones)."""
    entries = await client.xrange(stream)
    return [
        parse_event(entry_body(fields), stream)
        for _, fields in entries
        if event_id.encode() in fields.get(b"__data__", b"")
    ]


async def test_watch_sees_what_publish_retrain_and_rollback_put_on_the_streams(operated: Operated) -> None:
    streams = ["ingest.requested", "retrain.requested", "model.promoted"]
    proc = watcher(operated, "--count", "3", *(arg for s in streams for arg in ("--stream", s)))
    try:
        assert proc.stderr is not None
        ready = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), timeout=60)
        assert ready.startswith("watching ingest.requested, retrain.requested, model.promoted"), ready

        payload = {"dataset": "sensors", "uri": "file:///nowhere.csv", "trigger_training": False}
        published = (await operated.ok("publish", "ingest.requested", "--json", json.dumps(payload))).stdout
        retrain = (await operated.ok("retrain", MODEL, "--reason", "operator asked")).stdout
        rollback = await operated.json("models", "rollback", MODEL, "--wait", "--timeout", "60")
        assert rollback["action"] == "rollback" and rollback["version"] == "1"
        assert rollback["previous_version"] == "2" and rollback["served"]["version"] == "1"

        out, err = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    seen = [json.loads(line) for line in out.splitlines()]
    assert [s["stream"] for s in seen] == streams
    assert [s["event"]["event_id"] for s in seen] == [
        published.strip(),
        retrain.strip(),
        rollback["event_id"],
    ]
    assert seen[2]["event"]["payload"]["model_name"] == MODEL

    # What the CLI published is what the services read: the contracts' own parse of the entries.
    [ingest] = await published_events(operated.redis, events.INGEST_REQUESTED, published.strip())
    assert ingest.payload.uri == "file:///nowhere.csv" and ingest.payload.trigger_training is False
    [asked] = await published_events(operated.redis, events.RETRAIN_REQUESTED, retrain.strip())
    assert asked.payload.dataset == "sensors" and asked.payload.reason == "operator asked"
    assert asked.payload.evidence["model_name"] == MODEL


async def test_promote_waits_for_serving_and_a_refusal_or_bad_payload_changes_nothing(
    operated: Operated,
) -> None:
    wrong = await operated.cli("models", "promote", MODEL, "--version", "2", "--token", "wrong")
    assert wrong.exit_code == 1 and "401" in wrong.output and "[field: authorization]" in wrong.output
    missing = await operated.cli("models", "promote", MODEL, "--version", "9")
    assert missing.exit_code == 1 and "404" in missing.output and "[field: version]" in missing.output

    promoted = await operated.ok("models", "promote", MODEL, "--version", "2", "--wait")
    assert f"{MODEL}: promoted version 2 (champion); previous: version 1" in promoted.stdout
    assert f"serving serves {MODEL} version 2" in promoted.stdout
    assert await asyncio.to_thread(served_version, operated.serving.url) == "2"
    shown = await operated.json("models", "show", MODEL)
    assert (shown["champion"]["version"], shown["previous"]["version"]) == ("2", "1")
    decision = shown["last_decision"]
    assert decision["decision"] == "promoted" and decision["reasons"] == ["promotion requested over HTTP"]

    before = await operated.redis.xlen(events.RETRAIN_REQUESTED)
    invalid = await operated.cli("publish", "retrain.requested", "--json", '{"dataset": "sensors"}')
    assert invalid.exit_code == 2 and "reason: Field required" in invalid.output
    assert await operated.redis.xlen(events.RETRAIN_REQUESTED) == before
