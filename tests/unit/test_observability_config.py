"""Observability config (compose only): Prometheus scrape targets, the OpenTelemetry collector, Grafana
provisioning and dashboards. Static checks: nothing is started, only files are read (and the modules
declaring the services' metrics imported, to learn which metric families actually exist)."""

from __future__ import annotations

import difflib
import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.runtime.settings import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
PROMETHEUS_FILE = DEPLOY / "prometheus.yml"
OTEL_FILE = DEPLOY / "otel-collector.yaml"
GRAFANA = DEPLOY / "grafana"
DATASOURCES_FILE = GRAFANA / "provisioning" / "datasources" / "datasources.yaml"
PROVIDERS_FILE = GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml"
DASHBOARD_DIR = GRAFANA / "dashboards"
DASHBOARD_FILES = ("mesh-flow.json", "serving.json")

PROMETHEUS_DS = {"type": "prometheus", "uid": "prometheus"}

# Modules whose import registers every metric family the mesh services export.
METRIC_MODULES = (
    "shared.bus.metrics",
    "shared.runtime.service",
    "services.serving.metrics",
    "services.monitor.metrics",
)

# Families BentoML 1.4 (bentoml==1.4.39) exports on the serving API port's /metrics, with their labels.
# Source: bentoml/_internal/server/http/instruments.py, RunnerTrafficMetricsMiddleware._setup, which
# _bentoml_impl/server/app.py (ServiceAppFactory.middlewares) installs with the namespace
# api_server.metrics.namespace, "bentoml_service" by default
# (bentoml/_internal/configuration/v2/default_configuration.yaml); adaptive_batch_size is declared in
# _bentoml_impl/server/app.py itself. Names as declared there: prometheus_client appends the series
# suffixes (_bucket, _sum, _count, _created) to them.
_BENTOML_REQUEST_LABELS = ("endpoint", "service_name", "service_version", "http_response_code", "runner_name")
_BENTOML_ENDPOINT_LABELS = ("endpoint", "service_name", "service_version", "runner_name")
BENTOML_FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "bentoml_service_request_duration_seconds": ("histogram", _BENTOML_REQUEST_LABELS),
    "bentoml_service_request_total": ("counter", _BENTOML_REQUEST_LABELS),
    "bentoml_service_request_in_progress": ("gauge", _BENTOML_ENDPOINT_LABELS),
    "bentoml_service_websocket_connections": ("gauge", _BENTOML_ENDPOINT_LABELS),
    "bentoml_service_websocket_data_received": ("summary", _BENTOML_ENDPOINT_LABELS),
    "bentoml_service_websocket_data_sent": ("summary", _BENTOML_ENDPOINT_LABELS),
    "bentoml_service_last_request_timestamp_seconds": (
        "gauge",
        ("service_name", "service_version", "runner_name"),
    ),
    "bentoml_service_adaptive_batch_size": (
        "histogram",
        ("runner_name", "worker_index", "method_name", "service_version", "service_name"),
    ),
}

# Metrics each dashboard must chart (the point of the dashboard; a rename must show up here).
REQUIRED_SERIES = {
    "mesh-flow.json": {
        "mesh_events_handled_total",
        "mesh_events_published_total",
        "mesh_events_failed_total",
        "mesh_events_deadlettered_total",
        "mesh_events_duplicate_total",
        "mesh_retrains_triggered_total",
        "mesh_monitor_decisions_total",
        "mesh_model_loads_total",
        "mesh_http_request_duration_seconds_bucket",
        "mesh_consumer_lag_messages",
        "mesh_consumer_pending_messages",
    },
    "serving.json": {
        "mesh_predictions_total",
        "bentoml_service_request_duration_seconds_bucket",
        "bentoml_service_request_total",
        "mesh_model_version_serving",
        "mesh_model_swap_duration_seconds_bucket",
        "mesh_prediction_records_dropped_total",
        "mesh_drift_score",
        "mesh_window_performance",
    },
}

# The series a family of each type exposes (prometheus_client's exposition).
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "unknown": ("",),
}
# Series that only ever grow, hence the only valid arguments of rate()/irate()/increase().
MONOTONIC = {("counter", "_total"), ("histogram", "_bucket"), ("histogram", "_sum"), ("histogram", "_count")}
MONOTONIC |= {("summary", "_sum"), ("summary", "_count")}

# Labels Prometheus attaches to every scraped series itself.
SCRAPE_LABELS = {"job", "instance"}

PROMQL_FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes",
    "clamp", "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "delta", "deriv",
    "exp", "floor", "group", "histogram_avg", "histogram_count", "histogram_fraction",
    "histogram_quantile", "histogram_sum", "idelta", "increase", "irate", "label_join",
    "label_replace", "last_over_time", "ln", "log2", "log10", "max", "max_over_time", "min",
    "min_over_time", "predict_linear", "quantile", "quantile_over_time", "rate", "resets", "round",
    "scalar", "sort", "sort_desc", "sqrt", "stddev", "stddev_over_time", "stdvar", "sum",
    "sum_over_time", "time", "timestamp", "topk", "vector",
}  # fmt: skip
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
PROMQL_KEYWORDS |= {"group_left", "group_right", "Inf", "NaN", "inf", "nan"}

# Component types the otel/opentelemetry-collector-contrib 0.115 image ships that this config may use
# (the `logging` exporter, for one, was removed in 0.111: `debug` replaces it).
OTEL_COMPONENTS = {
    "receivers": {"otlp"},
    "processors": {"batch", "memory_limiter", "resource", "attributes", "filter", "tail_sampling"},
    "exporters": {"otlp", "otlphttp", "debug"},
    "extensions": {"health_check", "pprof", "zpages"},
}


# --- helpers -----------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose_default(value: Any) -> str:
    """``${VAR:-default}`` / ``${VAR-default}`` -> default; anything else as is."""
    match = re.fullmatch(r"\$\{[A-Z0-9_]+:?-([^}]*)\}", str(value))
    return match.group(1) if match else str(value)


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Bind mounts of a compose service as {host path relative to the repo: container path}."""
    result = {}
    for volume in service.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        if source.startswith("."):
            result[str(Path(source))] = target
    return result


def container_port(service: dict[str, Any]) -> int:
    """The container side of a compose service's (single) published port."""
    (spec,) = service["ports"]
    return int(compose_default(str(spec).rsplit(":", 1)[1]))


def host_port(address: str) -> tuple[str, int]:
    host, port = re.sub(r"^[a-z]+://", "", address).split("/", 1)[0].rsplit(":", 1)
    return host, int(port)


@dataclass(frozen=True)
class Series:
    family: str
    kind: str
    suffix: str
    labels: frozenset[str]


def series_of(name: str, kind: str, labels: tuple[str, ...] | frozenset[str]) -> dict[str, Series]:
    """Every series name a family exposes. Counters and infos are named without their suffix in the
    family (prometheus_client strips ``_total`` from a Counter's name), so strip it if present."""
    if kind == "counter":
        name = name.removesuffix("_total")
    elif kind == "info":
        name = name.removesuffix("_info")
    return {name + suffix: Series(name, kind, suffix, frozenset(labels)) for suffix in SERIES_SUFFIXES[kind]}


@dataclass
class Parsed:
    metrics: set[str]
    labels: set[str]
    functions: set[str]
    rated: set[str]  # metrics given directly to rate()/irate()/increase()
    errors: list[str]


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"\{([^{}]*)\}")
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*""\s*')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")
_RATED = re.compile(r"\b(?:rate|irate|increase)\(\s*([A-Za-z_:][A-Za-z0-9_:]*)")


def parse_promql(expr: str) -> Parsed:
    """Metric names, label names and functions of a PromQL expression: enough of PromQL's lexical
    structure for dashboard queries (strings, selectors, groupings and ranges are taken out first)."""
    parsed = Parsed(set(), set(), set(), set(), [])
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack: list[str] = []
    text = _STRING.sub('""', expr)
    for char in text:
        if char in pairs:
            stack.append(pairs[char])
        elif char in pairs.values() and (not stack or stack.pop() != char):
            parsed.errors.append(f"unbalanced {char!r}")
    if stack:
        parsed.errors.append(f"unclosed {''.join(stack)!r}")
    for selector in _SELECTOR.finditer(text):
        for matcher in filter(str.strip, selector.group(1).split(",")):
            match = _MATCHER.fullmatch(matcher)
            if match is None:
                parsed.errors.append(f"bad label matcher {matcher.strip()!r}")
            else:
                parsed.labels.add(match.group(1))
    text = _SELECTOR.sub(" ", text)
    for grouping in _GROUPING.finditer(text):
        parsed.labels.update(label.strip() for label in grouping.group(1).split(",") if label.strip())
    text = _RANGE.sub(" ", _GROUPING.sub(" ", text))
    parsed.rated.update(_RATED.findall(text))
    for ident in _IDENT.finditer(text):
        name, rest = ident.group(0), text[ident.end() :].lstrip()
        if rest.startswith("("):
            parsed.functions.add(name)
        elif name not in PROMQL_KEYWORDS:
            parsed.metrics.add(name)
    return parsed


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """All panels, including those nested in collapsed rows."""
    result = []
    for panel in dashboard.get("panels", []):
        result.append(panel)
        result.extend(panel.get("panels", []))
    return result


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel.get("title", "?"), target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if "expr" in target
    ]


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return data


@pytest.fixture(scope="module")
def mesh_services(compose: dict[str, Any]) -> dict[str, int]:
    """Mesh services (``x-embedded: {kind: process}``) and the default of their MESH_<NAME>_PORT."""
    result = {}
    for name, spec in compose["services"].items():
        if (spec.get("x-embedded") or {}).get("kind") == "process":
            result[name] = int(compose_default(spec["environment"][f"MESH_{name.upper()}_PORT"]))
    assert result, "no mesh services in docker-compose.yml"
    return result


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(PROMETHEUS_FILE)
    return data


@pytest.fixture(scope="module")
def otel() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(OTEL_FILE)
    return data


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return {name: json.loads((DASHBOARD_DIR / name).read_text(encoding="utf-8")) for name in DASHBOARD_FILES}


@pytest.fixture(scope="module")
def exported_series() -> dict[str, Series]:
    """Every series name the services export: the mesh's own families, read from prometheus_client's
    registry after importing the modules that declare them, plus BentoML's (BENTOML_FAMILIES)."""
    from prometheus_client import REGISTRY

    for module in METRIC_MODULES:
        importlib.import_module(module)
    # Label names are not part of a family's public description; the metric objects keep them.
    labels = {
        collector._name: collector._labelnames
        for collector in list(REGISTRY._collector_to_names)
        if hasattr(collector, "_name") and hasattr(collector, "_labelnames")
    }
    result: dict[str, Series] = {}
    for family in REGISTRY.collect():
        result.update(series_of(family.name, family.type, labels.get(family.name, ())))
    for name, (kind, family_labels) in BENTOML_FAMILIES.items():
        result.update(series_of(name, kind, family_labels))
    return result


@pytest.fixture(scope="module")
def target_labels(prometheus: dict[str, Any]) -> set[str]:
    return {
        label
        for job in prometheus["scrape_configs"]
        for static in job.get("static_configs", [])
        for label in static.get("labels", {})
    }


# --- dashboards --------------------------------------------------------------------------------------


def test_the_dashboard_folder_holds_exactly_the_known_dashboards() -> None:
    assert sorted(p.name for p in DASHBOARD_DIR.glob("*.json")) == sorted(DASHBOARD_FILES)


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_dashboard_is_a_provisionable_grafana_dashboard(name: str, dashboards: dict[str, Any]) -> None:
    board = dashboards[name]
    assert isinstance(board.get("title"), str) and board["title"]
    assert isinstance(board.get("uid"), str) and re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", board["uid"])
    assert board.get("schemaVersion") == 39
    assert board.get("refresh") == "10s"
    assert board.get("time") == {"from": "now-1h", "to": "now"}
    assert board.get("id") is None, "provisioned dashboards must not carry a database id"
    assert panels(board), "no panels"


def test_dashboards_have_distinct_uids_and_titles(dashboards: dict[str, Any]) -> None:
    uids = [board["uid"] for board in dashboards.values()]
    titles = [board["title"] for board in dashboards.values()]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)
    assert {board["uid"]: board["title"] for board in dashboards.values()} == {
        "mesh-flow": "mesh flow",
        "serving": "serving",
    }


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_every_panel_queries_prometheus_and_has_a_layout(name: str, dashboards: dict[str, Any]) -> None:
    board = dashboards[name]
    ids: list[Any] = []
    cells: set[tuple[int, int]] = set()
    for panel in panels(board):
        title = panel.get("title")
        assert title, f"untitled panel {panel}"
        assert panel.get("type") in {"timeseries", "stat"}, title
        ids.append(panel.get("id"))
        assert panel.get("datasource") == PROMETHEUS_DS, title
        targets = panel.get("targets") or []
        assert targets, f"{title}: no targets"
        refs = [target.get("refId") for target in targets]
        assert all(refs) and len(set(refs)) == len(refs), f"{title}: refIds {refs}"
        for target in targets:
            assert isinstance(target.get("expr"), str) and target["expr"].strip(), f"{title}: no expr"
            assert target.get("datasource", PROMETHEUS_DS) == PROMETHEUS_DS, title
        grid = panel.get("gridPos") or {}
        assert all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")), f"{title}: gridPos {grid}"
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["y"] >= 0, title
        assert grid["x"] + grid["w"] <= 24, f"{title}: wider than the 24-column grid"
        cells_here = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & cells_here, f"{title}: overlaps another panel"
        cells |= cells_here
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids), f"panel ids {ids}"


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_every_expression_is_well_formed_promql(name: str, dashboards: dict[str, Any]) -> None:
    problems = []
    for title, expr in queries(dashboards[name]):
        parsed = parse_promql(expr)
        problems += [f"{title}: {error} in {expr}" for error in parsed.errors]
        problems += [
            f"{title}: unknown function {f}() in {expr}" for f in parsed.functions - PROMQL_FUNCTIONS
        ]
        if not parsed.metrics:
            problems.append(f"{title}: no metric in {expr}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_every_metric_a_dashboard_queries_is_exported(
    name: str,
    dashboards: dict[str, Any],
    exported_series: dict[str, Series],
    target_labels: set[str],
) -> None:
    problems = []
    for title, expr in queries(dashboards[name]):
        parsed = parse_promql(expr)
        known = {m: exported_series[m] for m in parsed.metrics if m in exported_series}
        for metric in sorted(parsed.metrics - known.keys()):
            close = difflib.get_close_matches(metric, exported_series, n=3)
            problems.append(f"{title}: {metric} is not exported (close: {close}) in {expr}")
        for metric in sorted(parsed.rated & known.keys()):
            if (known[metric].kind, known[metric].suffix) not in MONOTONIC:
                problems.append(f"{title}: rate/increase over {known[metric].kind} series {metric}")
        allowed = set().union(*(s.labels for s in known.values())) | SCRAPE_LABELS | target_labels
        if any(s.suffix == "_bucket" for s in known.values()):
            allowed.add("le")
        if known:
            problems += [
                f"{title}: no label {label!r} on {sorted(known)}" for label in parsed.labels - allowed
            ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_dashboard_charts_what_it_is_for(name: str, dashboards: dict[str, Any]) -> None:
    referenced = set().union(*(parse_promql(expr).metrics for _, expr in queries(dashboards[name])))
    assert not REQUIRED_SERIES[name] - referenced, (
        f"not charted: {sorted(REQUIRED_SERIES[name] - referenced)}"
    )


def test_histogram_quantiles_aggregate_by_le(dashboards: dict[str, Any]) -> None:
    problems = []
    for board in dashboards.values():
        for title, expr in queries(board):
            for match in re.finditer(r"histogram_quantile\(\s*[\d.]+\s*,\s*(\w+)\s+by\s*\(([^)]*)\)", expr):
                if "le" not in {label.strip() for label in match.group(2).split(",")}:
                    problems.append(f"{title}: {expr}")
            if "histogram_quantile" in expr and "_bucket" not in expr:
                problems.append(f"{title}: histogram_quantile without a _bucket series: {expr}")
    assert not problems, "\n".join(problems)


def test_the_promql_reader_can_fail() -> None:
    """The checks above are only as good as parse_promql: it must see names, labels and mistakes."""
    parsed = parse_promql(
        'histogram_quantile(0.95, sum by (le, route) (rate(mesh_x_bucket{service="a,b", route!~"/m"}[1m])))'
        " / on(route) group_left mesh_y + 1e-9"
    )
    assert parsed.metrics == {"mesh_x_bucket", "mesh_y"}
    assert parsed.labels == {"le", "route", "service"}
    assert parsed.functions == {"histogram_quantile", "sum", "rate"}
    assert parsed.rated == {"mesh_x_bucket"}
    assert not parsed.errors
    assert parse_promql("sum(rate(mesh_x_total[1m])").errors
    assert parse_promql("mesh_x{service~'a'}").errors
    assert series_of("mesh_c_total", "counter", ()).keys() == {"mesh_c_total", "mesh_c_created"}
    assert "mesh_h" not in series_of("mesh_h", "histogram", ())


# --- prometheus --------------------------------------------------------------------------------------


def test_prometheus_scrapes_every_10s(prometheus: dict[str, Any]) -> None:
    assert prometheus["global"]["scrape_interval"] == "10s"
    jobs = [job["job_name"] for job in prometheus["scrape_configs"]]
    assert len(set(jobs)) == len(jobs), f"duplicate jobs: {jobs}"


def test_prometheus_scrapes_every_mesh_service_at_its_compose_port(
    prometheus: dict[str, Any], mesh_services: dict[str, int]
) -> None:
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    for name, port in mesh_services.items():
        assert name in jobs, f"no scrape job for {name}"
        job = jobs[name]
        assert job.get("metrics_path", "/metrics") == "/metrics", name
        assert job.get("scheme", "http") == "http", name
        targets = [t for static in job.get("static_configs", []) for t in static.get("targets", [])]
        assert targets == [f"{name}:{port}"], f"{name}: {targets}"


def test_prometheus_targets_are_compose_services(prometheus: dict[str, Any], compose: dict[str, Any]) -> None:
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _ = host_port(target)
                assert host in compose["services"], f"{job['job_name']}: {target} is not a compose service"


def test_prometheus_target_labels_do_not_shadow_metric_labels(
    target_labels: set[str], exported_series: dict[str, Series]
) -> None:
    """A target label that is also a metric label renames the metric's to exported_<label> on scrape."""
    metric_labels = set().union(*(s.labels for s in exported_series.values()))
    assert not target_labels & metric_labels, f"rename these target labels: {target_labels & metric_labels}"


def test_prometheus_scrapes_the_collector_where_it_serves_its_metrics(
    prometheus: dict[str, Any], otel: dict[str, Any]
) -> None:
    readers = otel["service"]["telemetry"]["metrics"]["readers"]
    exporters = [reader["pull"]["exporter"]["prometheus"] for reader in readers if "pull" in reader]
    assert exporters, "the collector exposes no metrics to scrape"
    assert exporters[0]["host"] == "0.0.0.0", "reachable from the prometheus container"
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    targets = [t for static in jobs["otel-collector"]["static_configs"] for t in static["targets"]]
    assert targets == [f"otel-collector:{exporters[0]['port']}"]


def test_compose_mounts_the_prometheus_config_where_prometheus_reads_it(compose: dict[str, Any]) -> None:
    service = compose["services"]["prometheus"]
    (config,) = [arg.split("=", 1)[1] for arg in service["command"] if arg.startswith("--config.file=")]
    assert mounts(service).get(str(PROMETHEUS_FILE.relative_to(REPO_ROOT))) == config


# --- otel collector ----------------------------------------------------------------------------------


def test_otel_pipelines_use_only_defined_components(otel: dict[str, Any]) -> None:
    pipelines = otel["service"]["pipelines"]
    assert "traces" in pipelines
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, pipeline in pipelines.items():
        assert pipeline.get("receivers") and pipeline.get("exporters"), name
        for section in used:
            for component in pipeline.get(section, []):
                assert component in (otel.get(section) or {}), (
                    f"{name}: {section} {component!r} is not defined"
                )
                used[section].add(component)
    for section, names in used.items():
        assert set(otel.get(section) or {}) == names, f"{section} defined but unused"
    for extension in otel["service"].get("extensions", []):
        assert extension in (otel.get("extensions") or {}), f"extension {extension!r} is not defined"


def test_otel_components_exist_in_the_contrib_image(otel: dict[str, Any]) -> None:
    for section, known in OTEL_COMPONENTS.items():
        for component in otel.get(section) or {}:
            assert component.split("/", 1)[0] in known, f"{section}: {component}"


def test_otel_receives_otlp_where_the_services_send_it(otel: dict[str, Any], compose: dict[str, Any]) -> None:
    protocols = otel["receivers"]["otlp"]["protocols"]
    assert host_port(protocols["grpc"]["endpoint"]) == ("0.0.0.0", 4317)
    assert host_port(protocols["http"]["endpoint"]) == ("0.0.0.0", 4318)
    endpoint = compose_default(compose["x-mesh-env"]["MESH_OTLP_ENDPOINT"])
    assert host_port(endpoint) == ("otel-collector", 4318), endpoint


def test_otel_traces_go_to_jaeger_and_the_debug_exporter(
    otel: dict[str, Any], compose: dict[str, Any]
) -> None:
    exporters = otel["service"]["pipelines"]["traces"]["exporters"]
    assert "debug" in exporters
    jaeger = [otel["exporters"][e] for e in exporters if e.split("/")[0] == "otlp"]
    assert len(jaeger) == 1
    assert host_port(jaeger[0]["endpoint"]) == ("jaeger", 4317)
    assert "jaeger" in compose["services"]
    assert jaeger[0]["tls"]["insecure"] is True


def test_compose_mounts_the_collector_config_where_it_reads_it(compose: dict[str, Any]) -> None:
    service = compose["services"]["otel-collector"]
    (config,) = [arg.split("=", 1)[1] for arg in service["command"] if arg.startswith("--config=")]
    assert mounts(service).get(str(OTEL_FILE.relative_to(REPO_ROOT))) == config


# --- grafana -----------------------------------------------------------------------------------------


def test_compose_mounts_grafana_provisioning(compose: dict[str, Any]) -> None:
    bound = mounts(compose["services"]["grafana"])
    assert bound.get(str((GRAFANA / "provisioning").relative_to(REPO_ROOT))) == "/etc/grafana/provisioning"


def test_dashboard_provider_loads_the_folder_compose_mounts(compose: dict[str, Any]) -> None:
    providers = load_yaml(PROVIDERS_FILE)
    assert providers["apiVersion"] == 1
    mounted = mounts(compose["services"]["grafana"]).get(str(DASHBOARD_DIR.relative_to(REPO_ROOT)))
    assert mounted, "compose does not mount deploy/grafana/dashboards"
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == mounted


def test_datasources_point_at_the_compose_services(compose: dict[str, Any]) -> None:
    datasources = load_yaml(DATASOURCES_FILE)
    assert datasources["apiVersion"] == 1
    by_uid = {ds["uid"]: ds for ds in datasources["datasources"]}
    assert len(by_uid) == len(datasources["datasources"]), "duplicate uids"
    assert [uid for uid, ds in by_uid.items() if ds.get("isDefault")] == ["prometheus"]
    for uid, service in (("prometheus", "prometheus"), ("jaeger", "jaeger")):
        assert by_uid[uid]["type"] == uid
        assert by_uid[uid]["access"] == "proxy"
        port = container_port(compose["services"][service])
        assert host_port(by_uid[uid]["url"]) == (service, port), by_uid[uid]["url"]


def test_dashboards_use_provisioned_datasources(dashboards: dict[str, Any]) -> None:
    provisioned = {(ds["type"], ds["uid"]) for ds in load_yaml(DATASOURCES_FILE)["datasources"]}
    for board in dashboards.values():
        for panel in panels(board):
            for ref in [
                panel["datasource"],
                *(t.get("datasource", panel["datasource"]) for t in panel["targets"]),
            ]:
                assert (ref["type"], ref["uid"]) in provisioned, f"{panel['title']}: {ref}"
