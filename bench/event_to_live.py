"""Event-to-live benchmark: from an upload of 100k rows to the model trained on them serving, and where the
time goes.

Starts the whole local stack with the launcher (embedded defaults, free ports, a scratch state directory),
uploads a first batch of 2,000 rows and waits for version 1 to serve (warm-up: every process has loaded
its code, MLflow has its experiment and model), then uploads 100,000 rows of the same generator (a new
seed) and measures, on the wall clock, from the upload request to serving answering with version 2. The
CSV body is encoded before the clock starts; serving is polled every ``--poll`` seconds.

The breakdown comes from the upload's trace, which the launcher's stack writes as JSON lines to
``<state dir>/traces.jsonl``: **compute** is the sum of the durations of the spans ``features.build``,
``training.fit``, ``training.evaluate`` and ``serving.swap`` (the new version's load and warm-up);
**orchestration** = total - compute: the upload's parsing and storage, the hops over the bus, MLflow
logging and registration, the registry's gate, polling. Goal: orchestration <= 3 s. Baseline, in the
same run once the stack is stopped: the same feature set built in-process from the same snapshots
(``build_feature_set``) and the same model fitted and evaluated in-process (``fit_servable``,
``evaluate``), without the bus, MLflow or the gate.

The gate must promote the new version (it has to beat the champion on the same holdout): if it rejects
it, the run says why, records it, and exits non-zero.

Usage: ``python -m bench.event_to_live [--rows 100000 --budget 240]``; ``make bench`` runs it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from bench.report import write_result
from shared import events
from shared.ops import launcher
from shared.ops.demo_data import generate
from shared.ops.driver import DEFAULT_MODEL, MeshDriver, MeshDriverError
from shared.ops.embedded import free_port
from shared.runtime.settings import SERVICE_NAMES, MeshSettings

DATASET = "demo"
MODEL = DEFAULT_MODEL
COMPUTE_SPANS = ("features.build", "training.fit", "training.evaluate", "serving.swap")
GOAL_ORCHESTRATION_S = 3.0
BASELINE_NEEDS_S = 20.0  # what the in-process baseline takes at most, about: skipped if less is left
SPAN_FLUSH_S = 30.0  # spans are exported in batches (every few seconds): how long to wait for the swap's


class OutOfTime(RuntimeError):
    pass


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self, what: str) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise OutOfTime(f"out of the {self.seconds:.0f} s budget before {what}")
        return left


# --- spans ----------------------------------------------------------------------------------------------


def _time(stamp: str) -> float:
    """A span's ISO time (``...Z``) as seconds since the epoch."""
    return datetime.fromisoformat(stamp).timestamp()


def read_spans(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    spans = []
    for line in path.read_text().splitlines():
        try:
            spans.append(json.loads(line))
        except ValueError:  # a line being appended right now
            continue
    return spans


def upload_trace(spans: list[dict[str, Any]], since: float) -> list[dict[str, Any]]:
    """The spans of the trace of the ``ingest.upload`` that started nearest ``since`` (epoch s), not
    more than a second before it."""
    uploads = [s for s in spans if s["name"] == "ingest.upload" and _time(s["start_time"]) >= since - 1.0]
    if not uploads:
        return []
    upload = min(uploads, key=lambda s: abs(_time(s["start_time"]) - since))
    trace_id = upload["context"]["trace_id"]
    return [s for s in spans if s["context"]["trace_id"] == trace_id]


def swap_span(chain: list[dict[str, Any]], version: str) -> dict[str, Any] | None:
    swaps = [
        s
        for s in chain
        if s["name"] == "serving.swap"
        and s["attributes"].get("mesh.model_version") == version
        and s["attributes"].get("mesh.model_name", MODEL) == MODEL
    ]
    return swaps[0] if swaps else None


def duration(span: dict[str, Any]) -> float:
    return _time(span["end_time"]) - _time(span["start_time"])


def breakdown(chain: list[dict[str, Any]], swap: dict[str, Any], total: float) -> dict[str, Any]:
    """Compute (the named spans' durations, summed) and orchestration (the rest of ``total``), and the
    trace's timeline up to the swap's end."""
    per_name: dict[str, float] = {}
    for span in chain:
        per_name[span["name"]] = per_name.get(span["name"], 0.0) + duration(span)
    compute_spans = {name: round(per_name.get(name, 0.0), 3) for name in COMPUTE_SPANS}
    compute = sum(per_name.get(name, 0.0) for name in COMPUTE_SPANS)
    first = min(_time(s["start_time"]) for s in chain)
    swap_end = _time(swap["end_time"])
    timeline = [
        {
            "name": s["name"],
            "service": s["resource"]["attributes"].get("service.name", "?"),
            "start_s": round(_time(s["start_time"]) - first, 3),
            "duration_s": round(duration(s), 3),
        }
        for s in sorted(chain, key=lambda s: s["start_time"])
        if _time(s["start_time"]) <= swap_end
    ]
    return {
        "total": round(total, 3),
        "compute": round(compute, 3),
        "compute_without_swap": round(compute - per_name.get("serving.swap", 0.0), 3),
        "orchestration": round(total - compute, 3),
        "trace_first_span_to_swap_end": round(swap_end - first, 3),
        "spans": compute_spans,
        "other_spans": {
            name: round(seconds, 3)
            for name, seconds in sorted(per_name.items(), key=lambda item: -item[1])
            if name not in COMPUTE_SPANS
        },
        "timeline": timeline,
    }


# --- the in-process baseline -----------------------------------------------------------------------------


def in_process(settings: MeshSettings, snapshot_id: str, scratch: Path) -> dict[str, Any]:
    """The compute steps without the mesh: the same window's feature set built into ``scratch``, then the
    same model fitted and evaluated, as the features and training services do."""
    from shared.ml.datasets import load_schema
    from shared.ml.feature_sets import build_feature_set, window
    from shared.ml.features import load_feature_spec
    from shared.ml.modeling import fit_servable, load_model_config, make_estimator
    from shared.ml.snapshots import SnapshotStore
    from shared.ml.tasks import evaluate

    config_dir, data_root = settings.config_dir, settings.effective_data_root
    schema, spec = load_schema(config_dir, DATASET), load_feature_spec(config_dir, DATASET)
    config = load_model_config(config_dir, DATASET)
    store = SnapshotStore(data_root)
    trigger = store.manifest(DATASET, snapshot_id)
    if trigger is None:
        raise RuntimeError(f"snapshot {snapshot_id} not found under {data_root}")
    snapshots = window(store.list(DATASET), trigger, spec.window.last_snapshots)

    # The libraries are imported where models are built and scored: a running training service holds them,
    # so they are imported here before the clock starts, not timed as compute.
    make_estimator(config)
    import sklearn.metrics  # noqa: F401

    started = time.perf_counter()
    manifest = build_feature_set(scratch, schema, spec, snapshots)
    built = time.perf_counter()
    train_frame = pl.read_parquet(manifest.train_path)  # training.load: not compute in the mesh either
    holdout = pl.read_parquet(manifest.holdout_path)
    pipeline = json.loads(manifest.pipeline_path.read_text())
    target = manifest.target
    fit_started = time.perf_counter()
    model = fit_servable(config, train_frame, target, pipeline)
    fitted = time.perf_counter()
    metrics = evaluate(model, holdout, target, config.task)
    evaluated = time.perf_counter()
    seconds = {
        "features": built - started,
        "fit": fitted - fit_started,
        "evaluate": evaluated - fitted,
    }
    return {
        "what": "build_feature_set + fit_servable + evaluate in one process, same snapshots",
        "feature_set_id": manifest.feature_set_id,
        "train_rows": manifest.train_rows,
        "holdout_rows": manifest.holdout_rows,
        "roc_auc": round(metrics["roc_auc"], 5),
        "seconds": {**{k: round(v, 3) for k, v in seconds.items()}, "total": round(sum(seconds.values()), 3)},
    }


# --- the run ---------------------------------------------------------------------------------------------


def wait_for_verdict(
    driver: MeshDriver, version: str, rejected_before: int, deadline: Deadline, poll: float
) -> tuple[dict[str, Any] | None, list[str]]:
    """Polls serving until it serves ``version`` (returns what it says), or the gate rejects (returns its
    reasons)."""
    while True:
        deadline.left(f"serving version {version}")
        served = driver.served_model(MODEL)
        if served is not None and served.get("version") == version:
            return served, []
        if driver.count(events.MODEL_REJECTED) > rejected_before:
            rejected = driver.last_event(events.MODEL_REJECTED)
            return None, list(rejected.payload.reasons) or ["(no reason given)"]
        time.sleep(poll)


def wait_for_trace(
    trace_file: Path, since: float, version: str, deadline: Deadline
) -> tuple[list[dict[str, Any]], dict[str, Any], bool]:
    """The upload's spans, once the swap of ``version`` is among them (spans are exported in batches),
    the swap's span, and whether it was in the upload's trace. Should serving have swapped on its own
    (its periodic check of the champion alias) rather than on the promotion event, the swap is found
    outside the trace after half the wait."""
    waited = min(SPAN_FLUSH_S, deadline.left("reading the trace"))
    started = time.monotonic()
    while True:
        spans = read_spans(trace_file)
        chain = upload_trace(spans, since)
        if chain and (swap := swap_span(chain, version)) is not None:
            return chain, swap, True
        if chain and time.monotonic() - started >= waited / 2:
            if (swap := swap_span(spans, version)) is not None:
                return chain, swap, False
        if time.monotonic() - started >= waited:
            names = sorted({s["name"] for s in chain})
            raise RuntimeError(
                f"no serving.swap of version {version} in {trace_file} after {waited:.0f} s; "
                f"the upload's trace has {names}"
            )
        time.sleep(0.5)


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    deadline = Deadline(args.budget)
    state = Path(tempfile.mkdtemp(prefix="mesh-bench-e2l-"))
    trace_file = state / "traces.jsonl"
    # The breakdown needs the spans in a file: what the launcher sets up unless told otherwise.
    exporters = [k.strip() for k in os.environ.get("MESH_OTEL_EXPORTER", "mlflow,file").split(",")]
    os.environ["MESH_OTEL_EXPORTER"] = ",".join(
        [k for k in exporters if k and k != "none"] + ["file"] * ("file" not in exporters)
    )
    os.environ["MESH_TRACE_FILE"] = str(trace_file)
    ports: dict[str, Any] = {f"{name}_port": free_port() for name in ("redis", "mlflow", *SERVICE_NAMES)}
    settings = MeshSettings(state_dir=state, **ports)
    result: dict[str, Any] = {
        "what": "wall clock from POST of a batch to serving answering with the model trained on it",
        "rows": {"warmup": args.warmup_rows, "measured": args.rows},
        "goal_orchestration_s": GOAL_ORCHESTRATION_S,
        "compute_spans": list(COMPUTE_SPANS),
        "state_dir": str(state),
    }
    log = io.StringIO()
    started = time.monotonic()
    try:
        code = launcher.up(settings, console=Console(file=log, width=200))
        if code != 0:
            raise RuntimeError(f"the stack did not start:\n{log.getvalue()}")
        result["stack_start_s"] = round(time.monotonic() - started, 1)
        console.print(f"stack up in {result['stack_start_s']} s (state: {state})")
        with MeshDriver(settings) as driver:
            driver.wait_timeout = deadline.left("the warm-up")
            warm = driver.upload(generate(rows=args.warmup_rows, seed=1), DATASET)
            if warm["duplicate"]:
                raise MeshDriverError("the warm-up batch was already stored")
            driver.wait_for_version("1", MODEL)
            result["warmup_s"] = round(time.monotonic() - started - result["stack_start_s"], 1)
            console.print(f"warm-up: version 1 serving after {result['warmup_s']} s")

            body = generate(rows=args.rows, seed=2).write_csv().encode()
            result["upload_bytes"] = len(body)
            rejected_before = driver.count(events.MODEL_REJECTED)
            deadline.left("the measured upload")
            since = time.time()
            clock = time.perf_counter()
            response = driver.http.post(
                f"{driver.ingest}/datasets/{DATASET}/batches",
                content=body,
                headers={"content-type": "text/csv"},
                timeout=max(deadline.left("the measured upload"), 1.0),
            )
            uploaded = time.perf_counter() - clock
            if response.status_code != 201:
                raise MeshDriverError(f"upload answered {response.status_code}: {response.text}")
            snapshot_id = response.json()["snapshot_id"]
            served, reasons = wait_for_verdict(driver, "2", rejected_before, deadline, args.poll)
            total = time.perf_counter() - clock
            result["upload_response_s"] = round(uploaded, 3)
            if served is None:
                result.update(promoted=False, rejection_reasons=reasons, seconds={"until_rejected": total})
                console.print(f"[red]the gate rejected the new version[/red]: {reasons}")
                return result
            result["promoted"] = True
            result["served"] = {k: served.get(k) for k in ("version", "feature_set_id", "run_id")}
            chain, swap, in_trace = wait_for_trace(trace_file, since, "2", deadline)
            result["swap_in_upload_trace"] = in_trace
            result["seconds"] = breakdown([*chain, swap] if not in_trace else chain, swap, total)
    except BaseException:
        console.print(f"launcher output:\n{log.getvalue()[-4000:]}\nservice logs: {state / 'logs'}")
        raise
    finally:
        launcher.down(settings, console=Console(file=log, width=200))
    if deadline.end - time.monotonic() < BASELINE_NEEDS_S:
        result["baseline"] = None
        console.print("[yellow]no time left in the budget for the in-process baseline: skipped[/yellow]")
    else:
        result["baseline"] = baseline = in_process(settings, snapshot_id, state / "baseline")
        if baseline["feature_set_id"] != result["served"]["feature_set_id"]:
            raise RuntimeError(
                f"the in-process feature set {baseline['feature_set_id']} is not the served model's "
                f"{result['served']['feature_set_id']}: the baseline did not redo the same work"
            )
    result["goal_met"] = result["seconds"]["orchestration"] <= GOAL_ORCHESTRATION_S
    result["run_s"] = round(time.monotonic() - started, 1)
    return result


def table(result: dict[str, Any]) -> Table:
    seconds = result["seconds"]
    baseline = (result.get("baseline") or {}).get("seconds", {})

    def base(key: str) -> str:
        return f"{baseline[key]:.2f}" if key in baseline else "-"

    out = Table(title=f"upload of {result['rows']['measured']:,} rows -> version 2 serving")
    for column in ("step", "mesh (s)", "in-process (s)"):
        out.add_column(column, justify="right" if column != "step" else "left")
    out.add_row("total (wall clock)", f"{seconds['total']:.2f}", base("total"))
    for name, key in (
        ("features.build", "features"),
        ("training.fit", "fit"),
        ("training.evaluate", "evaluate"),
    ):
        out.add_row(f"  {name}", f"{seconds['spans'][name]:.2f}", base(key))
    out.add_row("  serving.swap", f"{seconds['spans']['serving.swap']:.2f}", "-")
    out.add_row("compute", f"{seconds['compute']:.2f}", base("total"))
    out.add_row(f"orchestration (goal <= {GOAL_ORCHESTRATION_S:g})", f"{seconds['orchestration']:.2f}", "-")
    for name, value in list(seconds["other_spans"].items())[:12]:
        out.add_row(f"  (span) {name}", f"{value:.2f}", "")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the measured batch")
    parser.add_argument("--warmup-rows", type=int, default=2000, help="rows of the first batch")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds for the whole run, at most")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between polls of serving")
    args = parser.parse_args()
    console = Console(stderr=True, width=120)
    result = run(args, console)
    path = write_result("event_to_live", result)
    if not result.get("promoted"):
        console.print(f"-> {path}")
        sys.exit(1)
    console.print(table(result))
    seconds = result["seconds"]
    verdict = "met" if result["goal_met"] else "NOT met"
    console.print(
        f"event to live {seconds['total']:.2f} s = compute {seconds['compute']:.2f} s + orchestration "
        f"{seconds['orchestration']:.2f} s (goal <= {GOAL_ORCHESTRATION_S:g} s: {verdict})"
        + (
            f"; in-process compute {result['baseline']['seconds']['total']:.2f} s"
            if result.get("baseline")
            else ""
        )
        + f"  ->  {path}"
    )


if __name__ == "__main__":
    main()
