"""``mesh``: run a service, drive the local stack, make demo data, upload a batch."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import typer
from rich.console import Console

from shared.runtime.settings import SERVICE_NAMES, MeshSettings

app = typer.Typer(help="retrain-mesh: event-driven retraining mesh.", no_args_is_help=True)
console = Console()


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
def status() -> None:
    """Show each local stack process and its health."""
    from shared.ops import launcher

    sys.exit(launcher.status(MeshSettings(), console=console))


@app.command()
def logs(
    service: str | None = typer.Argument(None, help="one component; all when omitted"),
    lines: int = typer.Option(40, "--lines", "-n"),
) -> None:
    """Print the last lines of the local stack's logs (.mesh/logs/)."""
    from shared.ops import launcher

    sys.exit(launcher.logs(MeshSettings(), service, lines=lines, console=console))


@app.command()
def demo() -> None:
    """Start the stack and run the loop end to end: train, serve, hot swap, gate rejection."""
    from shared.ops.demo import run_demo

    sys.exit(run_demo(MeshSettings(), console))


@app.command("demo-data")
def demo_data(
    out: Path = typer.Option(..., help="CSV file to write"),
    dataset: str = typer.Option("demo", help="demo (synthetic churn) or cancer (sklearn's breast cancer)"),
    rows: int | None = typer.Option(None, min=1, help="rows [default: 2000 for demo, all 569 for cancer]"),
    seed: int = typer.Option(0),
    covariate_shift: float = typer.Option(
        0.0, help="0 = reference distribution; 1 = strongly shifted inputs"
    ),
    concept_shift: float = typer.Option(
        0.0, help="0 = reference relationship; 1 = strongly changed label rule (demo only)"
    ),
    label_noise: float = typer.Option(0.0, min=0.0, max=1.0, help="share of labels shuffled (1 = poisoned)"),
) -> None:
    """Write a seeded batch of a demo dataset as CSV: synthetic churn (`demo`) or breast cancer (`cancer`)."""
    from shared.ops.demo_data import cancer, generate

    if dataset == "cancer":
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
        raise typer.BadParameter(f"{dataset!r} is not one of: demo, cancer", param_hint="--dataset")
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(out)
    console.print(f"wrote {frame.height} rows of {dataset} to {out}")


@app.command()
def ingest(
    file: Path = typer.Argument(..., exists=True, dir_okay=False),
    dataset: str = typer.Option("demo"),
    url: str | None = typer.Option(None, help="ingest service base URL (default: from settings)"),
) -> None:
    """Upload a CSV, Parquet or JSON-lines file to the ingest service."""
    import httpx

    settings = MeshSettings()
    base = url or f"http://{settings.host}:{settings.ingest_port}"
    content_type = {".csv": "text/csv", ".parquet": "application/vnd.apache.parquet"}.get(
        file.suffix.lower(), "application/x-ndjson"
    )
    response = httpx.post(
        f"{base}/datasets/{dataset}/batches",
        content=file.read_bytes(),
        headers={"content-type": content_type},
        timeout=60,
    )
    console.print_json(response.text)
    if response.status_code >= 300:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
