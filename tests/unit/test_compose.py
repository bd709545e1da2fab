"""docker-compose.yml: valid per the compose spec, holds the project's invariants, and plans
(shared.ops.compose) as the local launcher should run it. Nothing here starts a process."""

from __future__ import annotations

import json
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
COMPOSE_ONLY = {"postgres", "minio", "minio-init", "otel-collector", "jaeger", "prometheus", "grafana"}


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


# --- the file itself ---------------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads((DATA / "compose-spec.json").read_text())
    errors = sorted(Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    assert "version" not in compose  # obsolete in the compose spec


def test_every_mesh_service_runs_the_project_image_and_is_health_checked(compose: dict[str, Any]) -> None:
    services = mesh_services(compose)
    assert "ingest" in services
    assert set(services) == {"ingest", "features", "training", "registry", "monitor", "serving"}
    for name, spec in services.items():
        assert name in SERVICE_NAMES
        port = f"${{MESH_{name.upper()}_PORT:-{MeshSettings.model_fields[f'{name}_port'].default}}}"
        if name == "serving":  # a BentoML service, served by bentoml itself
            assert spec["command"] == [
                "bentoml", "serve", "services.serving.app:MeshServing", "--host", "0.0.0.0", "--port", port
            ]  # fmt: skip
        else:
            assert spec["command"] == ["mesh", "run", name]
        assert spec["image"] == "retrain-mesh:latest"
        assert spec["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
        assert spec["environment"][f"MESH_{name.upper()}_PORT"] == port
        # Only what people and clients call is published: the others scale (`--scale training=3`).
        if name in ("features", "training"):
            assert "ports" not in spec
        else:
            assert spec["ports"] == [f"{port}:{port}"]
        health = spec["healthcheck"]
        # Serving is healthy when alive: it is ready only once a first model exists, which needs data.
        probe = "healthz" if name == "serving" else "readyz"
        assert health["test"] == ["CMD", "mesh", "health", f"http://127.0.0.1:{port}/{probe}"]
        assert {"interval", "timeout", "retries", "start_period"} <= health.keys()
        assert "mesh-data:/var/lib/mesh" in spec["volumes"]
        assert spec["environment"]["MESH_HOST"] == "0.0.0.0"  # in a container; the launcher rewrites it


def test_depends_on_waits_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, spec in services.items():
        deps = spec.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: use the long form of depends_on, with a condition"
        for target, rule in deps.items():
            condition = rule["condition"]
            if condition == "service_completed_successfully":  # one-shot jobs such as minio-init
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
        }, name


def test_infrastructure_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    redis = services["redis"]
    assert redis["command"] == ["redis-server", "--appendonly", "yes"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert any(v.endswith(":/data") for v in redis["volumes"])
    mlflow = services["mlflow"]
    command = " ".join(mlflow["command"])
    assert (
        "--backend-store-uri postgresql://" in command and "--artifacts-destination s3://mlflow/" in command
    )
    assert "MLFLOW_S3_ENDPOINT_URL" in mlflow["environment"]
    assert {t for t, r in mlflow["depends_on"].items() if r["condition"] == "service_healthy"} == {
        "postgres",
        "minio",
    }
    for tool in ("otel-collector", "jaeger", "prometheus", "grafana"):
        assert tool in services and "x-embedded" not in services[tool]


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
        "mlflow", "server", "--host", "127.0.0.1", "--port", "7002",
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
        "MESH_LOG_LEVEL": "INFO",  # compose default: the launcher passes only what it manages
        "MESH_OTEL_EXPORTER": "mlflow,file",
        "MESH_OTLP_ENDPOINT": "",
        "MESH_TRACE_FILE": str(state / "traces.jsonl"),
        "MESH_INGEST_PORT": "7003",
    }
    assert ingest.healthcheck == ["mesh", "health", "http://127.0.0.1:7003/readyz"]
    assert ingest.port == 7003 and ingest.depends_on == ["redis", "mlflow"]
    # start_period 10s + 12 x 5s, as compose would allow
    assert ingest.health_timeout == 70 and ingest.probe_timeout == 3

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


def test_plan_interpolates_from_the_given_environment(compose: dict[str, Any]) -> None:
    env = {
        "MESH_INGEST_PORT": "9101",
        "MESH_REDIS_URL": "redis://:secret@redis:6379/2",
        "MESH_OTLP_ENDPOINT": "",
        "MESH_LOG_LEVEL": "WARNING",
    }
    ingest = by_name(plan(compose, env))["ingest"]
    assert ingest.environment["MESH_REDIS_URL"] == "redis://:secret@127.0.0.1:6390/2"
    assert ingest.environment["MESH_OTLP_ENDPOINT"] == ""  # `${VAR-default}`: set-but-empty sticks
    assert ingest.environment["MESH_LOG_LEVEL"] == "WARNING"
    assert ingest.healthcheck == ["mesh", "health", "http://127.0.0.1:9101/readyz"]
    assert ingest.port == 9101


def test_a_user_supplied_redis_url_is_used_as_is() -> None:
    settings = MeshSettings(redis_url="redis://cache.internal:6379/0", mlflow_tracking_uri=None)
    env = launcher_env(settings, base={})
    assert env["MESH_REDIS_URL"] == "redis://cache.internal:6379/0"
    assert external_kinds(settings) == {"redis"}
    assert external_kinds(MeshSettings(redis_url=None, mlflow_tracking_uri=None)) == set()


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
            "job": {
                "entrypoint": "python -m",
                "command": "worker --url postgresql://u:p@db:5432/x --flag",
                "environment": ["A=1", "PASSED", "B=$${literal}"],
                "healthcheck": {"test": "exit 0", "interval": "1m30s", "retries": 2},
                "x-embedded": {"kind": "process"},
            },
        }
    }
    job = by_name(plan(compose, {"PASSED": "through", "DB_PORT": "25432"}))["job"]
    assert job.command == ["python", "-m", "worker", "--url", "postgresql://u:p@127.0.0.1:25432/x", "--flag"]
    assert job.environment == {"A": "1", "PASSED": "through", "B": "${literal}"}
    assert job.healthcheck == ["sh", "-c", "exit 0"]
    assert job.health_timeout == 180 and job.port is None


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
