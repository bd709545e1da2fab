"""The ingest service over HTTP and the bus, against a real Redis-compatible server."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import httpx
import polars as pl
import pytest
import redis.asyncio as aioredis

from services.ingest.app import create_app
from shared import events
from shared.bus import MeshBus
from shared.events import IngestRequested, new_event
from shared.runtime.retry import wait_for
from shared.runtime.settings import MeshSettings
from tests.support.data import demo_csv
from tests.support.servers import serve
from tests.support.streams import stream_events

pytestmark = pytest.mark.integration

CSV = {"content-type": "text/csv"}


def _snapshot_files(settings: MeshSettings) -> list[Path]:
    return sorted((settings.effective_data_root / "datasets").rglob("*.parquet"))


async def test_csv_upload_yields_exactly_one_event_with_its_snapshot_id(
    settings: MeshSettings, redis_client: aioredis.Redis
) -> None:
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/datasets/demo/batches", content=demo_csv(20), headers=CSV)
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["duplicate"] is False and body["row_count"] == 20

        again = await client.post("/datasets/demo/batches", content=demo_csv(20), headers=CSV)
        assert again.status_code == 200 and again.json()["duplicate"] is True
        assert again.json()["snapshot_id"] == body["snapshot_id"]

        listing = (await client.get("/datasets/demo/snapshots")).json()["snapshots"]

    envelopes = await stream_events(redis_client, events.DATA_INGESTED)
    assert len(envelopes) == 1
    assert envelopes[0].payload.snapshot_id == body["snapshot_id"]
    assert envelopes[0].event_id == body["event_id"]
    assert [s["snapshot_id"] for s in listing] == [body["snapshot_id"]]
    stored = pl.read_parquet(envelopes[0].payload.path)
    assert stored.height == 20 and stored["customer_id"].to_list()[0] == "s0-c0"
    assert len(_snapshot_files(settings)) == 1


async def test_parquet_and_jsonl_uploads(settings: MeshSettings, redis_client: aioredis.Redis) -> None:
    frame = pl.read_csv(io.BytesIO(demo_csv(6, seed=3)))
    parquet = io.BytesIO()
    frame.write_parquet(parquet)
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        first = await client.post(
            "/datasets/demo/batches",
            content=parquet.getvalue(),
            headers={"content-type": "application/vnd.apache.parquet"},
        )
        assert first.status_code == 201, first.text
        jsonl = pl.read_csv(io.BytesIO(demo_csv(6, seed=4))).write_ndjson().encode()
        second = await client.post(
            "/datasets/demo/batches", content=jsonl, headers={"content-type": "application/x-ndjson"}
        )
        assert second.status_code == 201, second.text
    assert len(await stream_events(redis_client, events.DATA_INGESTED)) == 2


async def test_bad_batch_gets_422_naming_every_column_and_stores_nothing(
    settings: MeshSettings, redis_client: aioredis.Redis
) -> None:
    bad = demo_csv(5).replace(b",north,", b",mars,").replace(b"s0-c1,2026-01-01T00:01:00Z,21", b"s0-c1,x,abc")
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/datasets/demo/batches", content=bad, headers=CSV)
        assert response.status_code == 422
        failures = {(f["column"], f["rule"]) for f in response.json()["failures"]}
        assert failures == {("region", "allowed"), ("event_time", "type"), ("age", "type")}
        snapshots = (await client.get("/datasets/demo/snapshots")).json()["snapshots"]
    assert snapshots == []
    assert _snapshot_files(settings) == []
    assert await redis_client.exists(events.DATA_INGESTED) == 0


async def test_http_errors_name_the_field(settings: MeshSettings, redis_client: aioredis.Redis) -> None:
    limited = settings.model_copy(update={"max_upload_bytes": 200})
    async with serve(create_app(limited)) as url, httpx.AsyncClient(base_url=url) as client:
        too_big = await client.post("/datasets/demo/batches", content=demo_csv(50), headers=CSV)
        assert too_big.status_code == 413 and too_big.json()["field"] == "body"
        unknown = await client.post("/datasets/nope/batches", content=b"a\n1\n", headers=CSV)
        assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
        wrong_type = await client.post(
            "/datasets/demo/batches", content=b"{}", headers={"content-type": "application/pdf"}
        )
        assert wrong_type.status_code == 415 and wrong_type.json()["field"] == "content-type"
        assert (await client.get("/readyz")).status_code == 200
    assert _snapshot_files(settings) == []


async def test_ingest_requested_event_is_validated_and_announced(
    settings: MeshSettings, redis_client: aioredis.Redis
) -> None:
    batch = settings.effective_data_root / "incoming" / "batch.csv"  # ingest reads only under its root
    batch.parent.mkdir(parents=True)
    batch.write_bytes(demo_csv(7, seed=9))
    publisher = MeshBus(settings, "test-publisher")
    async with serve(create_app(settings)):
        await publisher.broker.start()
        request = await publisher.emit(
            events.INGEST_REQUESTED, IngestRequested(dataset="demo", uri=batch.as_uri())
        )
        envelopes = await wait_for(
            lambda: stream_events(redis_client, events.DATA_INGESTED), timeout=10, what="data.ingested"
        )
        await publisher.stop()
    assert len(envelopes) == 1
    assert envelopes[0].causation_id == request.event_id
    assert envelopes[0].correlation_id == request.correlation_id
    assert envelopes[0].payload.row_count == 7


async def test_malformed_events_go_to_deadletter_and_the_service_keeps_serving(
    settings: MeshSettings, redis_client: aioredis.Redis
) -> None:
    bad_rows = settings.effective_data_root / "incoming" / "bad.csv"
    bad_rows.parent.mkdir(parents=True)
    bad_rows.write_bytes(demo_csv(3).replace(b",north,", b",mars,"))
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        # Not JSON at all, a JSON envelope missing its payload's uri, a file that does not exist,
        # and a file whose rows fail the schema: four different reasons, none may be lost.
        await redis_client.xadd(events.INGEST_REQUESTED, {"__data__": b"\x00garbage"})
        broken = new_event(events.INGEST_REQUESTED, IngestRequested(dataset="demo", uri="/x")).model_dump(
            mode="json"
        )
        del broken["payload"]["uri"]
        await redis_client.xadd(events.INGEST_REQUESTED, {"__data__": json.dumps(broken)})
        for uri in (str(bad_rows.parent / "missing.csv"), str(bad_rows)):
            event = new_event(events.INGEST_REQUESTED, IngestRequested(dataset="demo", uri=uri))
            await redis_client.xadd(events.INGEST_REQUESTED, {"__data__": event.model_dump_json()})

        async def four_letters() -> list | None:
            letters = await stream_events(redis_client, events.DEADLETTER)
            return letters if len(letters) >= 4 else None

        letters = await wait_for(four_letters, timeout=10, what="four dead letters")
        reasons = [letter.payload.error for letter in letters]
        assert "not valid JSON" in reasons[0]
        assert "payload.uri" in reasons[1]
        assert "missing.csv" in reasons[2] and "not a readable file" in reasons[2]
        assert "region [allowed]" in reasons[3]
        assert all(letter.payload.stream == events.INGEST_REQUESTED for letter in letters)
        assert letters[0].payload.original.endswith("garbage")

        response = await client.post("/datasets/demo/batches", content=demo_csv(4, seed=5), headers=CSV)
        assert response.status_code == 201
        assert (await client.get("/readyz")).status_code == 200
    pending = await redis_client.xpending(events.INGEST_REQUESTED, "ingest")
    assert pending["pending"] == 0


async def test_a_dataset_declared_wrong_is_refused_at_the_door_with_every_problem_named(
    settings: MeshSettings, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """Not stored, then failing deep in training: the upload gets the report `mesh dataset check` gives."""
    config_dir = tmp_path / "config"
    shutil.copytree(settings.config_dir, config_dir)
    model_file = config_dir / "models" / "demo.yaml"
    model_file.write_text(
        model_file.read_text().replace("task: binary", "task: regression").replace("roc_auc", "r2")
    )
    broken = settings.model_copy(update={"config_dir": config_dir})
    async with serve(create_app(broken)) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/datasets/demo/batches", content=demo_csv(5), headers=CSV)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == "name" and "not declared correctly" in body["error"]
    named = {(Path(p["file"]).name, p["field"]) for p in body["problems"]}
    # The floor of a metric the task does not have, and the monitor's metric that no longer fits.
    assert ("demo.yaml", "gate.floors.accuracy") in named and ("demo.yaml", "performance.metric") in named
    assert _snapshot_files(broken) == [] and await stream_events(redis_client, events.DATA_INGESTED) == []
