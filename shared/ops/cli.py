"""``mesh``: run a service, drive the local stack, make demo data, upload a batch; operate a running mesh
(models, predictions, events, drift). The operator verbs' logic is shared/ops/operate.py, their rendering
shared/ops/views.py; here only their arguments."""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from shared.runtime.settings import SERVICE_NAMES, MeshSettings

EXIT_CODES = (
    "Exit codes: 0 done; 1 the mesh is unreachable (the service and URL are named), refused, or did not get "
    "there in time; 2 invalid arguments or input, found before anything was sent."
)
app = typer.Typer(
    help=f"retrain-mesh: event-driven retraining mesh. {EXIT_CODES}",
    no_args_is_help=True,
)
models_app = typer.Typer(help="The mesh's models: list, show, promote, roll back.", no_args_is_help=True)
app.add_typer(models_app, name="models")
deadletter_app = typer.Typer(
    help="The deadletter stream: the events the services gave up on. List, show, replay, purge. "
    + EXIT_CODES,
    no_args_is_help=True,
)
app.add_typer(deadletter_app, name="deadletter")
dataset_app = typer.Typer(
    help="Declare a dataset: infer its four config files (datasets/, features/, models/, monitor/) from a "
    "sample of its data, and check them together. Exit codes: 0 done; 1 a bad file, target or declaration "
    "(every problem named); 2 invalid arguments.",
    no_args_is_help=True,
)
app.add_typer(dataset_app, name="dataset")
console = Console()
err_console = Console(stderr=True)


@contextlib.contextmanager
def operating() -> Iterator[None]:
    """An operator verb's failure (shared.ops.operate.OperateError) printed on stderr, exiting its code."""
    from shared.ops.operate import OperateError
    from shared.ops.views import error

    try:
        yield
    except OperateError as exc:
        error(err_console, exc.message, exc.details)
        raise typer.Exit(exc.exit_code) from None


def echo_json(data: object) -> None:
    from shared.ops.views import as_json

    typer.echo(as_json(data))


def show(data: Any, as_json: bool, render: Callable[[Any], Any]) -> None:
    """``data`` as JSON for a script (``--json``), else as ``render`` draws it for a person."""
    if as_json:
        echo_json(data)
    else:
        console.print(render(data))


@app.command()
def run(service: str = typer.Argument(..., help=f"one of: {', '.join(SERVICE_NAMES)}")) -> None:
    """Run one service in the foreground, as compose and the launcher run it (serving: ``bentoml serve``)."""
    import os

    import uvicorn

    settings = MeshSettings()
    port = settings.port_for(service)
    if service == "serving":
        # A BentoML service, served by bentoml's own server as compose runs it. Exec, not a child: the
        # signals a supervisor sends this process reach bentoml, which stops its workers gracefully.
        serve = ["serve", "services.serving.app:MeshServing", "--host", settings.host, "--port", str(port)]
        os.execv(sys.executable, [sys.executable, "-m", "bentoml", *serve])
    module = importlib.import_module(f"services.{service}.app")
    asgi = module.create_app(settings)
    uvicorn.run(
        asgi,
        host=settings.host,
        port=port,
        log_config=None,
        access_log=False,
        http="httptools",
        loop="uvloop",
        timeout_graceful_shutdown=30,
    )


@app.command()
def health(url: str) -> None:
    """Exit 0 when ``url`` answers 2xx (compose health checks; no curl needed in the image)."""
    import httpx

    try:
        response = httpx.get(url, timeout=3.0)
    except httpx.HTTPError as exc:
        console.print(f"[red]unreachable[/red] {url}: {exc}")
        raise typer.Exit(1) from None
    if response.status_code >= 300:
        console.print(f"[red]{response.status_code}[/red] {url}: {response.text[:300]}")
        raise typer.Exit(1)


@app.command()
def up() -> None:
    """Start the local stack (embedded Redis + MLflow + every service), wait until healthy."""
    from shared.ops import launcher

    sys.exit(launcher.up(MeshSettings(), console=console))


@app.command()
def down() -> None:
    """Stop exactly the processes `mesh up` started."""
    from shared.ops import launcher

    sys.exit(launcher.down(MeshSettings(), console=console))


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="print JSON (for scripts) instead of tables"),
    processes: bool = typer.Option(False, "--processes", help="only the local stack's processes (mesh up)"),
) -> None:
    """The mesh at a glance: each service's readiness and replicas, each stream's lag and pending per
    consumer group, dead letters, each model's champion, served version and last decision.

    Exit 0 when every service answers (serving is "not ready" until a first model serves: that is a
    state, not a failure); 1 when one is unreachable, or Redis is."""
    from shared.ops import launcher, operate, views

    settings = MeshSettings()
    if processes:
        sys.exit(launcher.status(settings, console=console))
    with operating(), operate.http_client(timeout=5.0) as http:
        data = operate.mesh_status(settings, http, operate.redis_client(settings))
    show(data, as_json, views.mesh_status)
    if any(service["state"] == "unreachable" for service in data["services"]):
        raise typer.Exit(1)


@app.command()
def logs(
    service: str | None = typer.Argument(None, help="one component; all when omitted"),
    lines: int = typer.Option(40, "--lines", "-n"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep printing new lines until Ctrl-C"),
) -> None:
    """Print the last lines of the local stack's logs (.mesh/logs/); with -f, follow them."""
    from shared.ops import launcher

    settings = MeshSettings()
    # One snapshot of where each log ends, for the tail and the follower both: a line written between
    # the two is shown once, not lost or twice.
    ends = launcher.log_ends(settings, service)
    code = launcher.logs(settings, service, lines=lines, console=console, upto=ends)
    if code or not follow:
        sys.exit(code)
    with contextlib.suppress(KeyboardInterrupt):
        launcher.follow_logs(settings, service, console=console, since=ends)


@app.command()
def demo(
    keep: bool = typer.Option(
        False, "--keep", help="run on what a previous demo left (by default its local stack starts afresh)"
    ),
) -> None:
    """Start the stack and run the loop end to end: train, serve, hot swap, gate rejection, drift."""
    from shared.ops.demo import run_demo

    sys.exit(run_demo(MeshSettings(), console, keep=keep))


@app.command("demo-data")
def demo_data(
    out: Path = typer.Option(..., help="CSV file to write"),
    dataset: str = typer.Option(
        "demo", help="demo (synthetic churn), cancer (sklearn's breast cancer) or wine (sklearn's wines)"
    ),
    rows: int | None = typer.Option(None, min=1, help="rows [default: 2000 for demo, all of cancer or wine]"),
    seed: int = typer.Option(0),
    covariate_shift: float = typer.Option(
        0.0, help="0 = reference distribution; 1 = strongly shifted inputs"
    ),
    concept_shift: float = typer.Option(
        0.0, help="0 = reference relationship; 1 = strongly changed label rule (demo only)"
    ),
    label_noise: float = typer.Option(0.0, min=0.0, max=1.0, help="share of labels shuffled (1 = poisoned)"),
) -> None:
    """Write a seeded batch of a demo dataset as CSV: synthetic churn, breast cancer or wine."""
    from shared.ops.demo_data import cancer, generate, wine

    if dataset == "wine":
        if concept_shift or covariate_shift or label_noise:
            raise typer.BadParameter("the wine dataset has no shift or noise knobs", param_hint="--dataset")
        try:
            frame = wine(rows=rows, seed=seed)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    elif dataset == "cancer":
        if concept_shift:
            raise typer.BadParameter("the cancer dataset has no concept shift", param_hint="--concept-shift")
        try:
            frame = cancer(rows=rows, seed=seed, covariate_shift=covariate_shift, label_noise=label_noise)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    elif dataset == "demo":
        frame = generate(
            rows=2000 if rows is None else rows,
            seed=seed,
            covariate_shift=covariate_shift,
            concept_shift=concept_shift,
            label_noise=label_noise,
        )
    else:
        raise typer.BadParameter(f"{dataset!r} is not one of: demo, cancer, wine", param_hint="--dataset")
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(out)
    console.print(f"wrote {frame.height} rows of {dataset} to {out}")


@app.command()
def ingest(
    file: Path = typer.Argument(..., exists=True, dir_okay=False),
    dataset: str = typer.Option("demo"),
    url: str | None = typer.Option(None, help="ingest service base URL (default: from settings)"),
) -> None:
    """Upload a CSV, Parquet or JSON-lines file to the ingest service (a progress bar while it uploads).

    The service validates it against the dataset's schema, stores it as a snapshot and announces it: the
    mesh then builds features, trains, gates, registers and serves the dataset's model on its own."""
    import httpx
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from shared.runtime.auth import bearer_header

    settings = MeshSettings()
    base = url or f"http://{settings.host}:{settings.ingest_port}"
    content_type = {
        ".csv": "text/csv",
        ".parquet": "application/vnd.apache.parquet",
        ".pq": "application/vnd.apache.parquet",
    }.get(file.suffix.lower(), "application/x-ndjson")
    size = file.stat().st_size
    columns = ("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(f"uploading {file.name}", total=size)

        def chunks() -> Iterator[bytes]:
            with file.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    progress.advance(task, len(chunk))
                    yield chunk

        try:
            response = httpx.post(
                f"{base}/datasets/{dataset}/batches",
                content=chunks(),
                headers={
                    "content-type": content_type,
                    "content-length": str(size),
                    **bearer_header(settings.api_token),
                },
                timeout=300,
            )
        except httpx.TransportError as exc:
            err_console.print(f"[red]cannot reach the ingest service at {base}: {exc}[/red]")
            raise typer.Exit(1) from None
    console.print_json(response.text)
    if response.status_code >= 300:
        raise typer.Exit(1)


# --- operating a running mesh ------------------------------------------------------------------------

JSON_OUT = "print JSON (for scripts) instead of a table"


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json", help=JSON_OUT)) -> None:
    """Every model serving declares: dataset, champion and previous versions (registry), served version."""
    from shared.ops import operate, views

    settings = MeshSettings()
    with operating(), operate.http_client() as http:
        rows = operate.list_models(settings, http)
    show(rows, as_json, views.models_table)


@models_app.command("show")
def models_show(
    name: str = typer.Argument(..., help="model name, e.g. churn-demo"),
    as_json: bool = typer.Option(False, "--json", help=JSON_OUT),
) -> None:
    """One model: its versions with metrics and lineage, what serves, the registry's last decision.

    Champion and previous come from the registry (GET /models/NAME) with their metrics, run, feature set
    and snapshots; the served version from serving; the last decision is the newest model.promoted or
    model.rejected event about the model on the streams."""
    from shared.ops import operate, views

    settings = MeshSettings()
    with operating(), operate.http_client() as http, operate.redis_client(settings) as client:
        data = operate.show_model(settings, http, client, name)
    show(data, as_json, views.model_detail)


def _move_champion(
    name: str, version: str | None, token: str | None, wait: bool, timeout: float, as_json: bool
) -> None:
    from rich.markup import escape

    from shared.ops import operate, views

    settings = MeshSettings()
    with operating(), operate.http_client(timeout=operate.COMMAND_TIMEOUT_S) as http:
        bearer = operate.registry_token(settings, token)
        result = operate.move_champion(settings, http, bearer, name, version)
        if not as_json:
            console.print(views.promotion(result))
        if wait:
            version = str(result["version"])
            waiting = escape(f"waiting for serving to serve {name} version {version}")
            with err_console.status(waiting) as status:

                def polled(seen: str) -> None:
                    status.update(f"{waiting}: {escape(seen)}")

                served = operate.wait_until_served(
                    settings, http, name, version, timeout=timeout, on_poll=polled
                )
            result = {**result, "served": served}
            if not as_json:
                console.print(f"serving serves {name} version {version}")
    if as_json:
        echo_json(result)


TOKEN_HELP = "registry bearer token (default: MESH_REGISTRY_TOKEN, else <state dir>/registry-token)"
WAIT_HELP = "then wait until serving serves the new champion (GET /models/NAME: loaded, that version)"


@models_app.command("promote")
def models_promote(
    name: str = typer.Argument(..., help="model name"),
    version: str = typer.Option(..., "--version", help="registered version number to make champion"),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    wait: bool = typer.Option(False, "--wait", help=WAIT_HELP),
    timeout: float = typer.Option(120.0, "--timeout", min=1, help="seconds --wait waits"),
    as_json: bool = typer.Option(False, "--json", help="print the registry's answer as JSON"),
) -> None:
    """Make a registered version the champion (registry POST /models/NAME/promote); show the new champion."""
    if not version.isdigit():
        raise typer.BadParameter(f"{version!r} is not a version number", param_hint="--version")
    _move_champion(name, version, token, wait, timeout, as_json)


@models_app.command("rollback")
def models_rollback(
    name: str = typer.Argument(..., help="model name"),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    wait: bool = typer.Option(False, "--wait", help=WAIT_HELP),
    timeout: float = typer.Option(120.0, "--timeout", min=1, help="seconds --wait waits"),
    as_json: bool = typer.Option(False, "--json", help="print the registry's answer as JSON"),
) -> None:
    """Move the champion back to the previous version (registry POST /models/NAME/rollback)."""
    _move_champion(name, None, token, wait, timeout, as_json)


@app.command()
def predict(
    model: str = typer.Argument(..., help="model name"),
    record: str | None = typer.Option(None, "--json", help="one record: '{\"field\": value, ...}'"),
    file: Path | None = typer.Option(
        None, "--file", exists=True, dir_okay=False, help="JSON-lines file of records (POST /predict_batch)"
    ),
) -> None:
    """Ask serving for a prediction of one record (--json) or many (--file); print its answer."""
    from shared.ops import operate

    if (record is None) == (file is None):
        raise typer.BadParameter("give exactly one of --json and --file")
    settings = MeshSettings()
    with operating():
        records = operate.read_records(file) if file else [operate.parse_record(record or "")]
        with operate.http_client(timeout=60.0) as http:
            result = operate.predict(settings, http, model, records, batch=file is not None)
    echo_json(result)


@app.command()
def publish(
    stream: str = typer.Argument(..., help="stream name, e.g. ingest.requested (see `mesh watch --help`)"),
    payload: str = typer.Option(..., "--json", help="the event's payload as JSON"),
) -> None:
    """Validate a payload against STREAM's contract, publish it in a new event; print the event id.

    The entry is written as the bus writes it. An invalid payload prints the contract's field errors and
    exits 2, publishing nothing."""
    from shared.ops import operate

    settings = MeshSettings()
    with operating():
        envelope = operate.build_event(stream, payload)
        with operate.redis_client(settings) as client:
            entry_id = operate.publish(settings, client, envelope)
    err_console.print(
        f"published {envelope.type} event (correlation {envelope.correlation_id}, entry {entry_id})"
    )
    typer.echo(envelope.event_id)


@app.command()
def retrain(
    model: str = typer.Argument(..., help="model name (its dataset is retrained)"),
    reason: str = typer.Option(..., "--reason", help="why: recorded in the event"),
    window_snapshots: int | None = typer.Option(
        None, "--window-snapshots", min=1, help="train on the last N snapshots (default: the spec's window)"
    ),
) -> None:
    """Publish retrain.requested for MODEL's dataset; print the event id."""
    from shared.ops import operate

    settings = MeshSettings()
    with operating():
        envelope = operate.retrain_event(settings, model, reason, window_snapshots)
        with operate.redis_client(settings) as client:
            operate.publish(settings, client, envelope)
    err_console.print(
        f"asked to retrain dataset {envelope.payload.dataset} of {model} "
        f"(correlation {envelope.correlation_id})"
    )
    typer.echo(envelope.event_id)


@app.command()
def drift(
    model: str = typer.Argument(..., help="model name"),
    as_json: bool = typer.Option(False, "--json", help=JSON_OUT),
    open_report: bool = typer.Option(False, "--open", help="open the monitor's HTML report in a browser"),
) -> None:
    """The monitor's drift summary of MODEL: windows, the latest decision and its reasons."""
    import webbrowser

    from shared.ops import operate, views

    settings = MeshSettings()
    with operating(), operate.http_client() as http:
        summary = operate.drift(settings, http, model)
    show(summary, as_json, views.drift_summary)
    if open_report:
        url = operate.drift_report_url(settings, model)
        err_console.print(f"report: {url}")
        if not webbrowser.open(url):
            err_console.print("no browser could be opened: visit the URL above")


@app.command()
def prune(
    older_than_days: float | None = typer.Option(
        None, "--older-than-days", min=0, help="default: MESH_RETENTION_DAYS"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="say what would go; delete nothing"),
    as_json: bool = typer.Option(False, "--json", help=JSON_OUT),
) -> None:
    """Delete snapshots, feature sets and traces older than N days that no registered model version
    references and no training window takes (the features service does this hourly when
    MESH_RETENTION_DAYS is set)."""
    from datetime import timedelta

    from shared.events import utcnow
    from shared.ml.retention import prune as prune_data
    from shared.ops import views
    from shared.runtime.mlflow_client import mlflow_client

    settings = MeshSettings()
    days = older_than_days if older_than_days is not None else settings.retention_days
    if days is None:
        raise _failed("how old is too old? --older-than-days N, or set MESH_RETENTION_DAYS", exit_code=2)
    before = utcnow() - timedelta(days=days)
    pruned = prune_data(
        settings.effective_data_root,
        settings.config_dir,
        mlflow_client(settings),
        before=before,
        trace_experiment=settings.trace_experiment,
        dry_run=dry_run,
    )
    show({"before": before.isoformat(), "dry_run": dry_run, **pruned.as_dict()}, as_json, views.pruned)


@app.command()
def watch(
    streams: list[str] | None = typer.Option(
        None, "--stream", "-s", help="a stream to watch (repeat for several; default: every stream)"
    ),
    count: int | None = typer.Option(None, "--count", min=1, help="stop after this many events"),
    as_json: bool = typer.Option(False, "--json", help="one JSON line per event: stream, entry id, event"),
) -> None:
    """Print events as they arrive on the streams until Ctrl-C.

    Each line: arrival time, stream (= event type), event id, correlation id, and the model or dataset it
    is about. Reads from now on (XREAD, no consumer group): the services' deliveries are untouched."""
    from shared import events
    from shared.ops import operate, views

    settings = MeshSettings()
    with operating():
        chosen = operate.watched_streams(streams)
        client = operate.redis_client(settings)
        seen = 0
        try:
            positions = operate.stream_ends(settings, client, chosen)
            shown = ", ".join(chosen) if len(chosen) < len(events.ALL_STREAMS) else "every stream"
            err_console.print(f"watching {shown} (Ctrl-C to stop)")
            for entry in operate.follow(settings, client, positions):
                if as_json:
                    typer.echo(views.seen_json(entry))
                else:
                    console.print(views.seen_line(entry))
                seen += 1
                if count is not None and seen >= count:
                    break
        except KeyboardInterrupt:
            err_console.print(f"stopped after {seen} event(s)")
        finally:
            client.close()


# --- dead letters ------------------------------------------------------------------------------------


@deadletter_app.command("list")
def deadletter_list(
    stream: str | None = typer.Option(None, "--stream", "-s", help="only letters from this original stream"),
    since: str | None = typer.Option(None, "--since", help="only letters after this letter id (exclusive)"),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="show at most this many (all are counted)"),
    as_json: bool = typer.Option(False, "--json", help=JSON_OUT),
) -> None:
    """The dead letters, newest first: letter id, original stream, group, error, attempts, when, and the
    entry a replay wrote; with a count per original stream and error kind."""
    from shared.ops import deadletters, operate, views

    with operating(), operate.redis_client(MeshSettings()) as client:
        data = deadletters.list_letters(client, stream=stream, since=since, limit=limit)
    show(data, as_json, views.dead_letters)


@deadletter_app.command("show")
def deadletter_show(
    letter_id: str = typer.Argument(..., metavar="ID", help="the letter's entry id on the deadletter stream"),
    as_json: bool = typer.Option(False, "--json", help=JSON_OUT),
) -> None:
    """One letter in full: where it came from, why, the original message as written, and whether that
    message passes its stream's contract now."""
    from shared.ops import deadletters, operate, views

    with operating(), operate.redis_client(MeshSettings()) as client:
        data = deadletters.show_letter(client, letter_id)
    show(data, as_json, views.dead_letter_detail)


@deadletter_app.command("replay")
def deadletter_replay(
    letter_ids: list[str] | None = typer.Argument(None, metavar="ID", help="letter ids to replay"),
    stream: str | None = typer.Option(
        None, "--stream", "-s", help="replay every letter from this stream not replayed yet"
    ),
    every: bool = typer.Option(False, "--all", help="replay every letter of every stream not replayed yet"),
    force: bool = typer.Option(
        False, "--force", help="write originals even when their stream's contract refuses them"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the replays as JSON"),
) -> None:
    """Put letters' original messages back on their streams (XADD __data__ = the original); print the
    new entry ids.

    Only when every chosen original passes its stream's contract now: otherwise nothing is written and
    the contract's errors are printed (exit 2), unless --force. A letter is replayed once: the replay is
    recorded (hash mesh:deadletter:replayed, letter id -> new entry id), and naming a replayed letter
    again is refused."""
    from shared.ops import deadletters, operate, views

    settings = MeshSettings()
    with operating(), operate.redis_client(settings) as client:
        chosen = deadletters.select_for_replay(
            client, letter_ids or [], stream=stream, every=every, force=force
        )
        if chosen.refused:
            raise operate.OperateError(
                f"{len(chosen.refused)} letter(s) cannot be replayed: nothing was written",
                exit_code=operate.EXIT_INVALID,
                details=[
                    f"{letter if isinstance(letter, str) else letter.entry_id}: {why}"
                    for letter, why in chosen.refused
                ],
            )
        results = deadletters.replay(client, chosen.ready)
    if as_json:
        echo_json(results)
    else:
        err_console.print(views.replayed(results))
        for result in results:
            if result["entry_id"]:
                typer.echo(result["entry_id"])
    if any(result["entry_id"] is None for result in results):
        raise typer.Exit(1)


@deadletter_app.command("purge")
def deadletter_purge(
    before: str | None = typer.Option(None, "--before", help="remove the letters older than this letter id"),
    older_than: str | None = typer.Option(
        None, "--older-than", help="remove the letters older than this: 90s, 30m, 12h, 7d, 2w"
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
) -> None:
    """Remove old letters from the deadletter stream (XTRIM MINID) with their replay records; print how
    many were removed. Asks first, unless --yes."""
    from shared.ops import deadletters, operate

    with operating(), operate.redis_client(MeshSettings()) as client:
        bound = deadletters.purge_bound(before, older_than)
        doomed = deadletters.purgeable(client, bound)
        if not doomed:
            err_console.print(f"no dead letters older than {bound}")
            typer.echo(0)
            return
        if not yes:
            typer.confirm(f"remove {len(doomed)} dead letter(s) older than {bound}?", abort=True, err=True)
        removed = deadletters.purge(client, bound, doomed)
    err_console.print(f"removed {removed} dead letter(s) older than {bound}")
    typer.echo(removed)


# --- declaring a dataset -----------------------------------------------------------------------------

CONFIG_DIR_HELP = "the config directory [default: MESH_CONFIG_DIR, else deploy/config]"


def _config_dir(given: Path | None) -> Path:
    return given if given is not None else MeshSettings().config_dir


def _failed(message: str, details: list[str] | None = None, exit_code: int = 1) -> typer.Exit:
    from shared.ops.views import error

    error(err_console, message, details or [])
    return typer.Exit(exit_code)


@dataset_app.command("init")
def dataset_init(
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="a sample of the data: .csv, .tsv, .parquet, .jsonl"
    ),
    name: str = typer.Option(..., "--name", help="the dataset's name (lower case, digits, - and _)"),
    target: str = typer.Option(..., "--target", help="the label column"),
    task: str | None = typer.Option(
        None, "--task", help="binary, multiclass or regression [default: inferred from the target]"
    ),
    id_column: str | None = typer.Option(
        None, "--id-column", help="a column identifying a row: keeps it on one side of the split"
    ),
    config_dir: Path | None = typer.Option(None, "--config-dir", help=CONFIG_DIR_HELP),
    force: bool = typer.Option(False, "--force", help="overwrite the dataset's files if they exist"),
    as_json: bool = typer.Option(False, "--json", help="print what was inferred and written as JSON"),
) -> None:
    """Infer the four files declaring dataset NAME from a sample FILE and write them: its schema (types,
    ranges with headroom, allowed values), features, model and gate, and drift monitor. Review them."""
    from shared.ml import declaration
    from shared.ml.config_files import InvalidConfig
    from shared.ml.datasets import DATASET_NAME
    from shared.ml.tasks import TASK_KINDS

    if not DATASET_NAME.match(name):
        raise typer.BadParameter(f"{name!r} must match {DATASET_NAME.pattern}", param_hint="--name")
    if task is not None and task not in TASK_KINDS:
        raise typer.BadParameter(f"{task!r} is not one of: {', '.join(TASK_KINDS)}", param_hint="--task")
    directory = _config_dir(config_dir)
    try:
        frame = declaration.read_sample(file)
        configs = declaration.infer_declaration(frame, name, target, task, id_column)
        written = declaration.write_declaration(directory, name, configs, force=force)
    except InvalidConfig as exc:
        raise _failed("the inferred declaration has problems", [str(p) for p in exc.problems]) from None
    except (ValueError, OSError) as exc:
        raise _failed(str(exc)) from None
    result = {**declaration.summary(configs), "rows": frame.height, "files": [str(p) for p in written]}
    show(result, as_json, _declared)


def _declared(result: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"dataset {result['dataset']}", title_justify="left")
    for column in ("column", "type", "role", "rules"):
        table.add_column(column)
    for col in result["columns"]:
        rules = [f"{k} {col[k]}" for k in ("min", "max", "max_null_rate") if k in col]
        if "allowed" in col:
            rules.insert(0, f"allowed {', '.join(col['allowed'])}")
        table.add_row(*(Text(cell) for cell in (col["name"], col["dtype"], col["role"], "; ".join(rules))))
    task = Text.assemble(
        "task ", (result["task"], "bold"), f" on target {result['target']!r}, from {result['rows']} rows"
    )
    if result["null_values"]:
        markers = ", ".join(repr(marker) for marker in result["null_values"])
        task.append(f"; {markers} read as missing (null_values)")
    files = Text("\n".join(f"wrote {path}" for path in result["files"]))
    hint = Text(f"review them, then: mesh dataset check {result['dataset']}", style="dim")
    return Group(task, table, files, hint)


@dataset_app.command("check")
def dataset_check(
    name: str = typer.Argument(..., help="the dataset's name"),
    config_dir: Path | None = typer.Option(None, "--config-dir", help=CONFIG_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="print the problems as JSON"),
) -> None:
    """Check dataset NAME's four files, each on its own and against each other; print every problem
    (exit 1 if any)."""
    from shared.ml import declaration

    directory = _config_dir(config_dir)
    problems = declaration.check_dataset(directory, name)
    result = {
        "dataset": name,
        "config_dir": str(directory),
        "ok": not problems,
        "problems": [{"file": p.file, "field": p.field, "message": p.message} for p in problems],
    }
    show(result, as_json, _checked)
    if problems:
        raise typer.Exit(1)


def _checked(result: dict[str, Any]) -> Any:
    from rich.text import Text

    if result["ok"]:
        return Text.assemble(
            ("ok", "bold green"),
            f": dataset {result['dataset']}'s four files in {result['config_dir']} agree",
        )
    text = Text.assemble(
        (f"{len(result['problems'])} problem(s)", "bold red"), f" in dataset {result['dataset']}:"
    )
    for problem in result["problems"]:
        where = f"{problem['file']}: {problem['field']}: " if problem["field"] else f"{problem['file']}: "
        text.append(f"\n  {where}{problem['message']}")
    return text


if __name__ == "__main__":
    app()
