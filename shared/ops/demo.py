"""``mesh demo``: the product's promise, end to end, on the local stack.

Upload data and a validated model is trained, registered and served; upload more and a better model
replaces it in the live server; upload a label-shuffled batch and the gate rejects it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import redis
from rich.console import Console
from rich.panel import Panel

from shared import events
from shared.bus import entry_body
from shared.ops import stack
from shared.ops.demo_data import EXAMPLE_RECORD, generate
from shared.runtime.settings import MeshSettings

STEP_TIMEOUT_S = 300.0


class DemoFailed(RuntimeError):
    pass


def _wait(what: str, check: Callable[[], Any], timeout: float = STEP_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise DemoFailed(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)


def _last_payload(client: redis.Redis, stream: str) -> dict[str, Any]:
    entries: Any = client.xrevrange(stream, count=1)
    if not entries:
        raise DemoFailed(f"stream {stream} is empty")
    payload: dict[str, Any] = json.loads(entry_body(entries[0][1]))["payload"]
    return payload


class Demo:
    def __init__(self, settings: MeshSettings, console: Console) -> None:
        self.settings = settings
        self.console = console
        self.ingest = f"http://127.0.0.1:{settings.ingest_port}"
        self.serving = f"http://127.0.0.1:{settings.serving_port}"
        self.registry = f"http://127.0.0.1:{settings.registry_port}"
        self.monitor = f"http://127.0.0.1:{settings.monitor_port}"
        self.redis = redis.Redis.from_url(settings.effective_redis_url)
        self.http = httpx.Client(timeout=60.0)
        self.workdir = settings.state_dir / "demo"

    def served_model(self) -> dict[str, Any] | None:
        try:
            response = self.http.get(f"{self.serving}/model")
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def upload(self, name: str, **knobs: Any) -> dict[str, Any]:
        path = self.workdir / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        generate(**knobs).write_csv(path)
        response = self.http.post(
            f"{self.ingest}/datasets/demo/batches",
            content=path.read_bytes(),
            headers={"content-type": "text/csv"},
        )
        body: dict[str, Any] = response.json()
        if response.status_code >= 300:
            raise DemoFailed(f"upload of {path} failed: {response.status_code} {body}")
        state = "already known" if body["duplicate"] else "stored"
        self.console.print(
            f"  uploaded [bold]{path}[/bold]: {body['row_count']} rows, {state} as snapshot "
            f"[cyan]{body['snapshot_id']}[/cyan]"
        )
        return body

    def predict_example(self) -> None:
        response = self.http.post(f"{self.serving}/predict", json={"features": EXAMPLE_RECORD})
        self.console.print(f"  POST /predict {json.dumps(EXAMPLE_RECORD)}")
        self.console.print(f"  -> {response.status_code} {response.text}")
        for header in ("x-model-version", "x-model-lineage"):
            self.console.print(f"     {header}: {response.headers.get(header)}")

    def lineage(self, model: dict[str, Any]) -> None:
        root = self.settings.effective_data_root.resolve() / "datasets" / "demo" / "snapshots"
        self.console.print(
            f"  model [bold]{model['name']} v{model['version']}[/bold]: MLflow run {model['run_id']}, "
            f"feature set {model['feature_set_id']}"
        )
        for snapshot in model["snapshot_ids"]:
            self.console.print(f"     trained on snapshot {root / (snapshot + '.parquet')}")

    def run(self) -> None:
        c = self.console
        c.rule("1. first batch: 600 rows")
        self.upload("batch-1", rows=600, seed=1)
        started = time.monotonic()
        first = _wait("a first model to serve", self.served_model)
        c.print(
            f"  a model serves after {time.monotonic() - started:.1f}s (ingest -> features -> training -> "
            "registry gate -> serving)"
        )
        self.lineage(first)
        self.predict_example()

        c.rule("2. a better-informed batch: 4,000 more rows")
        self.upload("batch-2", rows=4000, seed=2)
        started = time.monotonic()
        second = _wait(
            "the new version to serve",
            lambda: (m := self.served_model()) and m["version"] != first["version"] and m,
        )
        c.print(
            f"  hot swap: v{first['version']} -> [bold green]v{second['version']}[/bold green] after "
            f"{time.monotonic() - started:.1f}s, without restarting the server"
        )
        promoted = _last_payload(self.redis, events.MODEL_PROMOTED)
        evidence = promoted["evidence"]
        champion = evidence.get("champion") or {}
        c.print(
            f"  gate evidence on the same holdout: candidate roc_auc "
            f"{evidence['candidate']['metrics']['roc_auc']:.4f} vs champion "
            f"{(champion.get('metrics') or {}).get('roc_auc', float('nan')):.4f}"
        )
        self.lineage(second)
        self.predict_example()

        c.rule("3. a poisoned batch: 4,000 rows with shuffled labels")
        rejected_before = int(self.redis.xlen(events.MODEL_REJECTED))
        self.upload("batch-3-poisoned", rows=4000, seed=3, label_noise=1.0)
        _wait("the gate's verdict", lambda: int(self.redis.xlen(events.MODEL_REJECTED)) > rejected_before)
        rejection = _last_payload(self.redis, events.MODEL_REJECTED)
        c.print("  [bold red]rejected[/bold red] by the registry gate:")
        for reason in rejection["reasons"]:
            c.print(f"     - {reason}")
        still = self.served_model()
        c.print(f"  still serving v{still['version'] if still else '?'}: a worse candidate never serves")
        self.drift(still or second)

    def traffic(self, frame: pl.DataFrame) -> list[str]:
        """Send records through /predict_batch as live traffic; return their request ids."""
        inputs = frame.drop("customer_id", "event_time", "churned")
        request_ids: list[str] = []
        for chunk in inputs.iter_slices(250):
            response = self.http.post(f"{self.serving}/predict_batch", json={"records": chunk.to_dicts()})
            if response.status_code != 200:
                raise DemoFailed(f"/predict_batch answered {response.status_code}: {response.text}")
            request_ids += [p["request_id"] for p in response.json()["predictions"]]
        return request_ids

    def drift(self, serving: dict[str, Any]) -> None:
        c = self.console
        c.rule("4. live traffic drifts: 1,500 requests with shifted inputs, no labels yet")
        detected_before = int(self.redis.xlen(events.DRIFT_DETECTED))
        self.traffic(generate(rows=1500, seed=4, covariate_shift=1.0))
        _wait("drift to be detected", lambda: int(self.redis.xlen(events.DRIFT_DETECTED)) > detected_before)
        detected = _last_payload(self.redis, events.DRIFT_DETECTED)
        c.print(
            f"  [bold yellow]drift detected[/bold yellow] on v{detected['model_version']}: "
            f"{', '.join(detected['fired'][:6])}"
        )
        state = self.http.get(f"{self.monitor}/drift").json()["latest"]["decision"]
        c.print(
            f"  trigger policy: {'retrain' if state['retrain'] else 'hold'} ({'; '.join(state['reasons'])})"
        )

        c.rule("5. the world changes: 2,000 requests under a new churn rule, then their labels")
        retrains_before = int(self.redis.xlen(events.RETRAIN_REQUESTED))
        shifted = generate(rows=2000, seed=5, concept_shift=1.0)
        request_ids = self.traffic(shifted)
        labels = [{"request_id": r, "label": y} for r, y in zip(request_ids, shifted["churned"], strict=True)]
        response = self.http.post(f"{self.monitor}/labels", json={"labels": labels})
        if response.status_code != 202:
            raise DemoFailed(f"/labels answered {response.status_code}: {response.text}")
        c.print(f"  sent {len(labels)} labels to the monitor (POST /labels)")
        _wait("a retrain request", lambda: int(self.redis.xlen(events.RETRAIN_REQUESTED)) > retrains_before)
        retrain = _last_payload(self.redis, events.RETRAIN_REQUESTED)
        c.print(f"  [bold]retrain requested[/bold]: {retrain['reason']}")
        fresh = _wait(
            "the retrained version to serve",
            lambda: (m := self.served_model()) and m["version"] != serving["version"] and m,
        )
        episode = self.episode_started_at(retrain["evidence"].get("episode_event_id"))
        elapsed = (datetime.now(UTC) - episode).total_seconds() if episode else float("nan")
        c.print(
            f"  [bold green]v{fresh['version']} serves[/bold green], trained on the labelled live traffic "
            f"(snapshot {', '.join(fresh['snapshot_ids'])}); {elapsed:.1f}s from the drifted window to "
            "the new version live"
        )

    def episode_started_at(self, event_id: str | None) -> datetime | None:
        entries: Any = self.redis.xrange(events.DRIFT_DETECTED)
        for _, fields in entries:
            event = json.loads(entry_body(fields))
            if event["event_id"] == event_id:
                return datetime.fromisoformat(event["occurred_at"])
        return None

    def where_to_look(self) -> None:
        mlflow_url = self.settings.effective_mlflow_uri
        self.console.print(
            Panel.fit(
                "\n".join(
                    [
                        f"MLflow UI (runs, lineage, registry):  {mlflow_url}/#/models/churn-demo",
                        f"Serving (BentoML, Swagger UI at /):     {self.serving}   GET /model, POST /predict",
                        f"Ingest:                                 {self.ingest}/datasets/demo/snapshots",
                        f"Registry:                               {self.registry}/models/churn-demo",
                        f"Drift report:                           {self.monitor}/drift/report",
                        f"Events:   redis-cli -p {self.settings.redis_port} XRANGE model.promoted - +",
                        f"Logs:     {self.settings.state_dir.resolve() / 'logs'}   (make logs)",
                        f'Rollback: curl -X POST -H "Authorization: Bearer $(cat '
                        f'{self.settings.state_dir.resolve() / "registry-token"})" '
                        f"{self.registry}/models/churn-demo/rollback",
                        "The stack keeps running: stop it with `make down`.",
                    ]
                ),
                title="where to look",
            )
        )


def run_demo(settings: MeshSettings, console: Console) -> int:
    console.rule("starting the local stack")
    if (code := stack.up(settings, console=console)) != 0:
        return code
    demo = Demo(settings, console)
    try:
        demo.run()
    except (DemoFailed, httpx.HTTPError) as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        console.print(f"see the logs under {Path(settings.state_dir).resolve() / 'logs'} (make logs)")
        return 1
    demo.where_to_look()
    return 0
