"""Observability a person can look at, checked for real (``make test-observability``).

The whole stack as processes (``mesh up``), a real Prometheus (Debian's package) scraping every service
with ``deploy/prometheus.yml``, targets moved to the stack's ports the way compose's are (job names and
paths as written), and the demo's loop run through it: two uploads, traffic, labels, drift. Then:

- every target is up;
- every PromQL query of every Grafana dashboard panel returns a number over the run (a panel that shows
  nothing is a bug: a family never exported, a label never set, a series that only appears on failure);
- headless Chromium renders each model's drift report and the MLflow UI's view of an upload's trace; the
  screenshots are not blank and the pages hold the expected titles and span names.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image, ImageStat

from shared.ops.demo_data import EXAMPLE_RECORD, cancer, cancer_record, generate
from shared.ops.driver import MeshDriver
from shared.ops.embedded import free_port
from shared.runtime.retry import wait_until
from shared.runtime.settings import REPO_ROOT, MeshSettings
from tests.support.stack import running_stack, stack_settings

pytestmark = [pytest.mark.observability, pytest.mark.timeout(900)]

DEPLOY = REPO_ROOT / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
MODELS = {"churn-demo": "demo", "cancer-demo": "cancer"}
SCRAPE_S = 2  # the deployed 10 s, shortened so that a few minutes of traffic give every rate its samples
# Not in the local stack: the collector runs only under compose (the local stack writes spans to MLflow
# and a file), so its job is left out here; tests/unit/test_observability_config.py checks its config.
COMPOSE_ONLY_JOBS = {"otel-collector"}


@dataclass
class Observed:
    mesh: MeshDriver
    prometheus: str
    started: float  # when the traffic began, for range queries


def local_scrape_config(settings: MeshSettings, path: Path) -> Path:
    """``deploy/prometheus.yml`` with each target at the stack's port of its service, as compose maps them."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = f"{SCRAPE_S}s"
    config["global"]["scrape_timeout"] = f"{SCRAPE_S}s"
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in COMPOSE_ONLY_JOBS:
            continue
        for static in job["static_configs"]:
            static["targets"] = [
                f"127.0.0.1:{settings.port_for(target.split(':')[0])}" for target in static["targets"]
            ]
        jobs.append(job)
    config["scrape_configs"] = jobs
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def prometheus(settings: MeshSettings, workdir: Path) -> Iterator[str]:
    """A real Prometheus scraping the stack of ``settings``; its URL while inside."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("no prometheus binary: `make test-observability` installs Debian's package")
    port = free_port()
    config = local_scrape_config(settings, workdir / "prometheus.yml")
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with (workdir / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{url}/-/ready"), timeout=60, what="Prometheus to be ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def targets(url: str) -> dict[str, str]:
    """Job -> health of each active target ("up", "down", "unknown")."""
    active = httpx.get(f"{url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    return {t["labels"]["job"]: t["health"] for t in active}


def run_the_loop(mesh: MeshDriver) -> None:
    """The demo's loop, for every panel to have something to show: both models trained, promoted and
    swapped twice, traffic and labels for both, a drifted window, a malformed event dead-lettered."""
    for seed in (1, 2):
        mesh.upload(generate(rows=1500, seed=seed))
        mesh.upload(cancer(rows=500, seed=seed), dataset="cancer")
        mesh.wait_for_version(str(seed), "churn-demo")
        mesh.wait_for_version(str(seed), "cancer-demo")
    ids = mesh.send_traffic(generate(rows=600, seed=3), "churn-demo")
    mesh.send_labels(ids, generate(rows=600, seed=3)["churned"])
    drifted = generate(rows=600, seed=4, covariate_shift=1.0)
    mesh.send_labels(mesh.send_traffic(drifted, "churn-demo"), drifted["churned"])
    batch = cancer(rows=500, seed=5)
    cancer_ids = mesh.send_traffic(batch, "cancer-demo")
    mesh.send_labels(cancer_ids, batch[mesh_label(mesh, "cancer")].to_list())
    # Single requests as well, for the /predict latency panels, spread over several scrapes as live traffic
    # is: BentoML creates an endpoint's latency series at its first request, and rate() sees no increase
    # in a series whose every request came before its second scrape.
    for _ in range(40):
        assert mesh.predict(EXAMPLE_RECORD).status_code == 200
        assert mesh.predict(cancer_record(), "cancer-demo").status_code == 200
        time.sleep(SCRAPE_S / 8)
    mesh.redis.xadd("labels", {"__data__": b"{not json"})
    for model in MODELS:  # what the demo's summary says to open
        assert mesh.http.get(f"{mesh.registry}/models/{model}").status_code == 200
    mesh.wait_for("a window of each model", lambda: all(mesh.drift(m)["windows"] for m in MODELS) or None)


def mesh_label(mesh: MeshDriver, dataset: str) -> str:
    from shared.ml.datasets import load_schema

    return load_schema(mesh.settings.config_dir, dataset).target


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    state = tmp_path_factory.mktemp("observed")
    with running_stack(stack_settings(state)) as mesh, prometheus(mesh.settings, state) as url:
        wait_until(lambda: set(targets(url).values()) == {"up"} or None, timeout=120, what="every target up")
        started = time.time()
        run_the_loop(mesh)
        time.sleep(3 * SCRAPE_S)  # the last counts scraped
        yield Observed(mesh, url, started)


def test_prometheus_scrapes_every_service_of_the_stack(observed: Observed) -> None:
    health = targets(observed.prometheus)
    expected = {
        job["job_name"] for job in yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    } - COMPOSE_ONLY_JOBS
    assert health == dict.fromkeys(expected, "up")


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL) of every target of every panel."""
    found = []
    for path in DASHBOARDS:
        dashboard = yaml.safe_load(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((path.stem, panel["title"], target["expr"]))
    return found


def test_every_dashboard_panel_shows_data_after_the_loop(observed: Observed) -> None:
    end = time.time()
    span_s = int(end - observed.started) + 1
    empty = []
    for dashboard, title, expr in panel_queries():
        # Grafana's range variable, as the dashboard's time range would set it.
        query = expr.replace("$__range", f"{span_s}s")
        answer = httpx.get(
            f"{observed.prometheus}/api/v1/query_range",
            params={"query": query, "start": observed.started, "end": end, "step": SCRAPE_S},
            timeout=30,
        ).json()
        assert answer["status"] == "success", (dashboard, title, answer)
        values = [float(v) for series in answer["data"]["result"] for _, v in series["values"]]
        if not any(math.isfinite(v) for v in values):
            empty.append(f"{dashboard} / {title}: {expr}\n    scraped: {scraped(observed.prometheus, expr)}")
    assert len(panel_queries()) > 30
    assert empty == [], "panels showing nothing:\n" + "\n".join(empty)


def scraped(url: str, expr: str) -> dict[str, int]:
    """For a failure's message: how many series of each family ``expr`` reads Prometheus holds now."""
    names = set(re.findall(r"\b(mesh_\w+|bentoml_\w+)", expr))
    found = {}
    for name in sorted(names):
        answer = httpx.get(f"{url}/api/v1/query", params={"query": f"count({name})"}, timeout=30).json()
        found[name] = int(float(answer["data"]["result"][0]["value"][1])) if answer["data"]["result"] else 0
    return found


def chromium(url: str, workdir: Path, name: str) -> tuple[Image.Image, str]:
    """``url`` rendered by headless Chromium: its screenshot and its DOM after scripts ran."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("no chromium binary: `make test-observability` installs Debian's package")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={workdir / 'chromium'}",
        "--window-size=1400,1800",
        "--virtual-time-budget=20000",  # the page's scripts and fetches run before the capture
    ]
    shot = workdir / f"{name}.png"
    subprocess.run(
        [binary, *flags, f"--screenshot={shot}", url], capture_output=True, timeout=180, check=True
    )
    dom = subprocess.run(
        [binary, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=180, check=True
    ).stdout
    return Image.open(shot).convert("L"), dom


def not_blank(image: Image.Image) -> bool:
    low, high = image.getextrema()
    return high - low > 100 and ImageStat.Stat(image).stddev[0] > 10


@pytest.mark.parametrize("model", sorted(MODELS))
def test_the_drift_report_of_each_model_renders(observed: Observed, model: str, tmp_path: Path) -> None:
    image, dom = chromium(f"{observed.mesh.monitor}/drift/{model}/report", tmp_path, model)
    assert not_blank(image)
    assert f"Drift report: {model}" in dom and "Score history" in dom and "Most drifted features" in dom
    assert dom.count("data:image/png;base64,") >= 2  # the history and at least one feature


def test_the_mlflow_ui_shows_an_upload_trace_with_its_spans(observed: Observed, tmp_path: Path) -> None:
    mlflow = observed.mesh.mlflow
    experiment = mlflow.get_experiment_by_name(observed.mesh.settings.trace_experiment)
    assert experiment is not None
    traces = mlflow.search_traces(experiment_ids=[experiment.experiment_id], max_results=200)
    # An upload's trace, followed to the swap it led to.
    hops = {
        "POST /datasets/{name}/batches",
        "features.build",
        "training.fit",
        "registry.gate",
        "serving.swap",
    }
    uploads = [t for t in traces if hops <= {s.name for s in t.data.spans}]
    assert uploads, [sorted({s.name for s in t.data.spans}) for t in traces[:5]]
    trace = uploads[0]
    url = (
        f"{observed.mesh.settings.effective_mlflow_uri}/#/experiments/{experiment.experiment_id}"
        f"/traces?selectedEvaluationId={trace.info.trace_id}"
    )
    image, dom = chromium(url, tmp_path, "trace")
    assert not_blank(image)
    assert {name for name in hops if name in dom} == hops, dom[:2000]
