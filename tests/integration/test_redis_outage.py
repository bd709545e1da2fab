"""An HTTP service whose Redis goes away and comes back (a restart, a failover): requests meanwhile get a
503 that says to retry, not a 500; afterwards the same request succeeds, announced exactly once."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from services.ingest.app import create_app
from shared import events
from shared.ops.embedded import free_port, start_valkey
from shared.runtime.settings import MeshSettings
from tests.support.data import demo_csv
from tests.support.servers import serve
from tests.support.streams import stream_events

pytestmark = pytest.mark.integration

CSV = {"content-type": "text/csv"}


class Restartable:
    """A valkey-server of this test's own, AOF on as compose runs Redis, that can be stopped and started
    again on the same port and data."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.proc = start_valkey(self.port, root / "data", root / "valkey.log")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=15)

    def start(self) -> None:
        self.proc = start_valkey(self.port, self.root / "data", self.root / "valkey.log")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Restartable]:
    found = Restartable(tmp_path / "valkey")
    yield found
    if found.proc.poll() is None:
        found.stop()


async def test_an_upload_while_redis_is_down_is_a_503_to_retry_and_completes_once_it_is_back(
    settings: MeshSettings, server: Restartable
) -> None:
    settings = settings.model_copy(update={"redis_port": server.port})
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        server.stop()
        refused = await client.post("/datasets/demo/batches", content=demo_csv(12), headers=CSV)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1" and "retry" in refused.json()["error"]

        server.start()
        again = await client.post("/datasets/demo/batches", content=demo_csv(12), headers=CSV)
        assert again.status_code == 201, again.text
        assert again.json()["duplicate"] is False  # stored before, but never announced: announced now

    redis = aioredis.from_url(f"redis://127.0.0.1:{server.port}/0")
    try:
        envelopes = await stream_events(redis, events.DATA_INGESTED)
    finally:
        await redis.aclose()
    assert [e.payload.snapshot_id for e in envelopes] == [again.json()["snapshot_id"]]
