"""``mesh demo``: the product's promise, end to end, on the local stack.

Upload data and a validated model is trained, registered and served, one model per dataset: the churn
model of the synthetic ``demo`` dataset, the cancer model of scikit-learn's breast-cancer data (both
binary) and a multiclass model of its wine data (XGBoost, string labels), served side by side. Upload more
churn data and a better model replaces it in the live server; upload a label-shuffled batch and the gate
rejects it; drifted traffic and late labels retrain it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
from rich.console import Console

from shared import events
from shared.ml.modeling import load_model_config
from shared.ops import launcher
from shared.ops.demo_data import EXAMPLE_RECORD, cancer, cancer_record, generate, wine, wine_record
from shared.ops.driver import MeshDriver, MeshDriverError
from shared.ops.embedded import valkey_server_binary
from shared.runtime.settings import MeshSettings

STEP_TIMEOUT_S = 300.0
DATASETS = ("demo", "cancer", "wine")  # each trains its own model (deploy/config/models/<dataset>.yaml)
EXAMPLES = {"demo": lambda: EXAMPLE_RECORD, "cancer": cancer_record, "wine": wine_record}
BATCHES: dict[str, Callable[..., pl.DataFrame]] = {"demo": generate, "cancer": cancer, "wine": wine}
SHOWN_FIELDS = 8  # fields of an example request printed: all of a churn record, the start of a cancer one


class Demo:
    """The demo's narration on the console, over a :class:`MeshDriver` that does the driving."""

    def __init__(self, settings: MeshSettings, console: Console) -> None:
        self.settings = settings
        self.console = console
        self.mesh = MeshDriver(settings, wait_timeout=STEP_TIMEOUT_S)
        self.workdir = settings.state_dir / "demo"
        self.models = {d: load_model_config(settings.config_dir, d).model_name for d in DATASETS}

    def upload(self, name: str, dataset: str = "demo", **knobs: Any) -> dict[str, Any]:
        """Make a batch of ``dataset`` (the knobs of its maker in ``demo_data``), keep it as
        <state>/demo/<name>.csv, upload it."""
        path = self.workdir / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        batch = BATCHES[dataset](**knobs)
        batch.write_csv(path)
        body = self.mesh.upload(batch, dataset)
        state = "already known" if body["duplicate"] else "stored"
        self.console.print(
            f"  uploaded [bold]{path}[/bold]: {body['row_count']} rows, {state} as snapshot "
            f"[cyan]{body['snapshot_id']}[/cyan]"
        )
        return body

    def predict_example(self, dataset: str = "demo") -> None:
        record = EXAMPLES[dataset]()
        model = self.models[dataset]
        response = self.mesh.predict(record, model)
        shown = json.dumps(dict(list(record.items())[:SHOWN_FIELDS]))
        if len(record) > SHOWN_FIELDS:
            shown = f"{shown[:-1]}, ... ({len(record)} fields)}}"
        self.console.print(f'  POST /predict {{"model": "{model}", "features": {shown}}}')
        self.console.print(f"  -> {response.status_code} {response.text}")
        for header in ("x-model-version", "x-model-lineage"):
            self.console.print(f"     {header}: {response.headers.get(header)}")

    def lineage(self, model: dict[str, Any], dataset: str = "demo") -> None:
        root = self.settings.effective_data_root.resolve() / "datasets" / dataset / "snapshots"
        self.console.print(
            f"  model [bold]{model['name']} v{model['version']}[/bold]: MLflow run {model['run_id']}, "
            f"feature set {model['feature_set_id']}"
        )
        for snapshot in model.get("snapshot_ids", []):
            self.console.print(f"     trained on snapshot {root / (snapshot + '.parquet')}")

    def last_promotion(self, model: str) -> events.ModelPromoted:
        for event in reversed(self.mesh.events(events.MODEL_PROMOTED)):
            if event.payload.model_name == model:
                return event.payload
        raise MeshDriverError(f"no promotion of {model} on {events.MODEL_PROMOTED}")

    def run(self) -> None:
        c, mesh = self.console, self.mesh
        churn, cancer_model, wine_model = self.models["demo"], self.models["cancer"], self.models["wine"]
        c.rule("1. first batches: 600 churn rows, the 569 breast-cancer samples and the 178 wines")
        self.upload("batch-1", rows=600, seed=1)
        self.upload("cancer-1", dataset="cancer")
        self.upload("wine-1", dataset="wine")
        started = time.monotonic()
        first = mesh.wait_for_model(f"a first {churn} to serve", lambda _: True, churn)
        c.print(
            f"  {churn} serves after {time.monotonic() - started:.1f}s (ingest -> features -> training -> "
            "registry gate -> serving)"
        )
        diagnosis = mesh.wait_for_model(f"a first {cancer_model} to serve", lambda _: True, cancer_model)
        c.print(
            f"  {cancer_model} serves beside it after {time.monotonic() - started:.1f}s: one server, "
            "each request names its model"
        )
        self.lineage(first)
        self.predict_example()
        cultivar = mesh.wait_for_model(f"a first {wine_model} to serve", lambda _: True, wine_model)
        c.print(
            f"  {wine_model} too after {time.monotonic() - started:.1f}s: another task kind (multiclass, "
            "three cultivars by name), another estimator family (XGBoost)"
        )
        self.lineage(diagnosis, "cancer")
        self.predict_example("cancer")
        self.lineage(cultivar, "wine")
        self.predict_example("wine")

        c.rule("2. a better-informed batch: 4,000 more rows")
        self.upload("batch-2", rows=4000, seed=2)
        started = time.monotonic()
        second = mesh.wait_for_model(
            "the new version to serve", lambda m: m["version"] != first["version"], churn
        )
        c.print(
            f"  hot swap: v{first['version']} -> [bold green]v{second['version']}[/bold green] after "
            f"{time.monotonic() - started:.1f}s, without restarting the server"
        )
        evidence = self.last_promotion(churn).evidence
        champion = evidence.get("champion") or {}
        c.print(
            f"  gate evidence on the same holdout: candidate roc_auc "
            f"{evidence['candidate']['metrics']['roc_auc']:.4f} vs champion "
            f"{(champion.get('metrics') or {}).get('roc_auc', float('nan')):.4f}"
        )
        self.lineage(second)
        self.predict_example()

        c.rule("3. a poisoned batch: 4,000 rows with shuffled labels")
        rejected_before = mesh.count(events.MODEL_REJECTED)
        self.upload("batch-3-poisoned", rows=4000, seed=3, label_noise=1.0)
        mesh.wait_for("the gate's verdict", lambda: mesh.count(events.MODEL_REJECTED) > rejected_before)
        rejection = mesh.last_event(events.MODEL_REJECTED).payload
        c.print("  [bold red]rejected[/bold red] by the registry gate:")
        for reason in rejection.reasons:
            c.print(f"     - {reason}")
        still = mesh.served_model(churn)
        c.print(f"  still serving v{still['version'] if still else '?'}: a worse candidate never serves")
        self.drift(still or second)

    def drift(self, serving: dict[str, Any]) -> None:
        c, mesh, churn = self.console, self.mesh, self.models["demo"]
        c.rule("4. live traffic drifts: 1,500 requests with shifted inputs, no labels yet")
        detected_before = mesh.count(events.DRIFT_DETECTED)
        mesh.send_traffic(generate(rows=1500, seed=4, covariate_shift=1.0), churn)
        mesh.wait_for("drift to be detected", lambda: mesh.count(events.DRIFT_DETECTED) > detected_before)
        detected = mesh.last_event(events.DRIFT_DETECTED).payload
        c.print(
            f"  [bold yellow]drift detected[/bold yellow] on v{detected.model_version}: "
            f"{', '.join(detected.fired[:6])}"
        )
        state = mesh.drift(churn)["latest"]["decision"]
        c.print(
            f"  trigger policy: {'retrain' if state['retrain'] else 'hold'} ({'; '.join(state['reasons'])})"
        )

        c.rule("5. the world changes: 2,000 requests under a new churn rule, then their labels")
        retrains_before = mesh.count(events.RETRAIN_REQUESTED)
        shifted = generate(rows=2000, seed=5, concept_shift=1.0)
        sent = mesh.send_labels(mesh.send_traffic(shifted, churn), shifted["churned"])
        c.print(f"  sent {sent} labels to the monitor (POST /labels)")
        mesh.wait_for("a retrain request", lambda: mesh.count(events.RETRAIN_REQUESTED) > retrains_before)
        retrain = mesh.last_event(events.RETRAIN_REQUESTED).payload
        c.print(f"  [bold]retrain requested[/bold]: {retrain.reason}")
        fresh = mesh.wait_for_model(
            "the retrained version to serve", lambda m: m["version"] != serving["version"], churn
        )
        episode = self.episode_started_at(retrain.evidence.get("episode_event_id"))
        elapsed = (datetime.now(UTC) - episode).total_seconds() if episode else float("nan")
        c.print(
            f"  [bold green]v{fresh['version']} serves[/bold green], trained on the labelled live traffic "
            f"(snapshot {', '.join(fresh['snapshot_ids'])}); {elapsed:.1f}s from the drifted window to "
            "the new version live"
        )

    def episode_started_at(self, event_id: str | None) -> datetime | None:
        """When the drift episode that led to a retrain was first detected."""
        for event in self.mesh.events(events.DRIFT_DETECTED):
            if event.event_id == event_id:
                return event.occurred_at
        return None

    def where_to_look(self) -> None:
        """One line per address, never wrapped by rich: a URL cut in two is no link (the terminal wraps a
        long line, and it stays one)."""
        mlflow_url, mesh, state = self.settings.effective_mlflow_uri, self.mesh, self.settings.state_dir
        models = list(self.models.values())  # one per demo dataset: churn, cancer, wine
        valkey_cli = valkey_server_binary().with_name("valkey-cli")
        token = state.resolve() / "registry-token"
        rollback = f"{mesh.registry}/models/{models[0]}/rollback"
        groups: list[tuple[str, list[str]]] = [
            ("MLflow UI (runs, lineage, registry)", [f"{mlflow_url}/#/models/{name}" for name in models]),
            (
                "Serving (BentoML, Swagger UI at /)",
                [
                    f"{mesh.serving}/models   (GET /models/NAME)",
                    'POST /predict {"model": NAME, "features": {...}}',
                ],
            ),
            ("Ingest", [f"{mesh.ingest}/datasets/{dataset}/snapshots" for dataset in self.models]),
            ("Registry", [f"{mesh.registry}/models/{name}" for name in models]),
            ("Drift reports", [f"{mesh.monitor}/drift/{name}/report" for name in models]),
            (
                "Events",
                [
                    ".venv/bin/mesh watch   (and: mesh status, mesh deadletter list)",
                    f"{valkey_cli} -p {self.settings.redis_port} XRANGE model.promoted - +",
                ],
            ),
            ("Logs", [f"{state.resolve() / 'logs'}   (make logs)"]),
            ("Rollback", [f'curl -X POST -H "Authorization: Bearer $(cat {token})" {rollback}']),
        ]
        width = max(len(label) for label, _ in groups)
        self.console.rule("where to look")
        for label, values in groups:
            for value in values:  # the label on its group's first line only
                self.console.print(
                    f"{label:<{width}}  {value}", soft_wrap=True, highlight=False, markup=False
                )
                label = ""
        self.console.print("The stack keeps running: stop it with `make down`.")


# What a demo leaves in the local stack's state dir: its data, registry, streams and batches. A second run
# on them would upload batches the stack already holds (stored once, announced once: nothing would train).
DEMO_STATE = ("data", "mlflow", "redis", "bentoml", "demo", "traces.jsonl")


def start_afresh(settings: MeshSettings, console: Console) -> None:
    """Stop the local stack and remove what a previous demo left, when the stack is the embedded one."""
    state = settings.state_dir.resolve()
    if not (state / "demo").exists():
        return
    if settings.redis_url or settings.mlflow_tracking_uri:
        console.print(
            "[yellow]a previous demo ran, and Redis or MLflow is external: its batches are stored there "
            "already, so steps that wait for a new model may not see one[/yellow]"
        )
        return
    console.rule("a previous demo's local stack: stopped and removed, to start afresh (--keep keeps it)")
    launcher.down(settings, console=console)
    for name in DEMO_STATE:
        path = state / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def run_demo(settings: MeshSettings, console: Console, *, keep: bool = False) -> int:
    if not keep:
        start_afresh(settings, console)
    console.rule("starting the local stack")
    if (code := launcher.up(settings, console=console)) != 0:
        return code
    demo = Demo(settings, console)
    try:
        demo.run()
    except (MeshDriverError, TimeoutError, httpx.HTTPError) as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        console.print(f"see the logs under {Path(settings.state_dir).resolve() / 'logs'} (make logs)")
        return 1
    finally:
        demo.mesh.close()
    demo.where_to_look()
    return 0
