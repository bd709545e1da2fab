"""Hostile batches against the real ingest app on a real Redis-compatible server: files cut mid-way, the
wrong encoding, values of the wrong type, empty files, uploads past the size limit, and names or URIs that
try to leave the data root. Each is refused with a 4xx (or, for an ``ingest.requested`` event, a dead
letter) naming what is wrong; nothing is written outside the data root, nothing partial is left in it,
and nothing is announced."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import redis.asyncio as aioredis

from services.ingest.app import create_app
from shared import events
from shared.events import IngestRequested, new_event
from shared.runtime.retry import wait_for
from shared.runtime.settings import MeshSettings
from tests.support.data import DEMO_HEADER, demo_csv
from tests.support.servers import serve
from tests.support.streams import stream_events

pytestmark = pytest.mark.integration

CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
JSONL = "application/x-ndjson"
LIMIT = 64 * 1024


def demo_frame(rows: int = 20) -> pl.DataFrame:
    return pl.read_csv(io.BytesIO(demo_csv(rows)), infer_schema=False)


def parquet_of(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def cut_mid_row(data: bytes, row: int) -> bytes:
    """``data`` cut inside row ``row`` (1: the first after the header), in its third field."""
    start = sum(len(line) + 1 for line in data.split(b"\n")[:row])
    return data[: start + data[start:].index(b",", data[start:].index(b",") + 1) + 3]


CSV_TEXT = demo_csv(20)
JSONL_TEXT = demo_frame(8).write_ndjson().encode()
PARQUET_BYTES = parquet_of(demo_frame(20))

# (what, body, content type, status, field, words the refusal must say)
HOSTILE_UPLOADS: list[tuple[str, bytes, str, int, str, tuple[str, ...]]] = [
    ("csv cut mid-row", cut_mid_row(CSV_TEXT, 12), CSV, 422, "body", ("fields", "line 13", "truncated")),
    ("csv cut mid-quote", DEMO_HEADER.encode() + b'\ns0-c0,"2026-01-01T00:0', CSV, 422, "body", ("fields",)),
    ("csv with a stray separator", CSV_TEXT.replace(b",north,", b",no,rth,"), CSV, 422, "body", ("fields",)),
    ("parquet cut mid-way", PARQUET_BYTES[: len(PARQUET_BYTES) // 2], PARQUET, 422, "body", ("parquet",)),
    ("parquet cut to its magic", PARQUET_BYTES[:4], PARQUET, 422, "body", ("parquet",)),
    ("parquet sent as csv", PARQUET_BYTES, CSV, 422, "body", ("encoding",)),
    ("jsonl cut mid-object", JSONL_TEXT[:-25], JSONL, 422, "body", ("line 8", "not JSON", "truncated")),
    ("jsonl of arrays", b"[1, 2]\n", JSONL, 422, "body", ("line 1", "not a JSON object")),
    ("utf-16 csv", CSV_TEXT.decode().encode("utf-16"), CSV, 422, "body", ("UTF-16", "UTF-8")),
    ("utf-16 csv, no bom", CSV_TEXT.decode().encode("utf-16-le"), CSV, 422, "body", ("NUL", "line 1")),
    ("utf-32 jsonl", JSONL_TEXT.decode().encode("utf-32"), JSONL, 422, "body", ("UTF-32",)),
    (
        "latin-1 csv",
        CSV_TEXT.replace(b"s0-c3,", "s0-ç3,".encode("latin-1")),
        CSV,
        422,
        "body",
        ("0xe7", "line 5", "not UTF-8"),
    ),
    ("latin-1 jsonl", JSONL_TEXT.replace(b"north", "nörth".encode("latin-1")), JSONL, 422, "body", ("0xf6",)),
    ("csv, age not a number", CSV_TEXT.replace(b"Z,21,", b"Z,abc,"), CSV, 422, "age", ("type", "'abc'")),
    ("csv, age past int64", CSV_TEXT.replace(b"Z,21,", b"Z,1e300,"), CSV, 422, "age", ("type",)),
    ("csv, spend infinite", CSV_TEXT.replace(b",51.5,", b",inf,"), CSV, 422, "monthly_spend", ("type",)),
    ("csv, spend nan", CSV_TEXT.replace(b",51.5,", b",NaN,"), CSV, 422, "monthly_spend", ("type",)),
    (
        "parquet, age as lists",
        parquet_of(demo_frame().with_columns(pl.concat_list("age", "age").alias("age"))),
        PARQUET,
        422,
        "age",
        ("type", "List(String)"),
    ),
    (
        "parquet, income as bytes",
        parquet_of(demo_frame().with_columns(pl.col("income").cast(pl.Binary))),
        PARQUET,
        422,
        "income",
        ("type", "Binary"),
    ),
    (
        "jsonl, income as objects",
        JSONL_TEXT.replace(b'"income":"30001"', b'"income":{"amount":30001}'),
        JSONL,
        422,
        "income",
        ("type", "amount"),
    ),
    (
        "jsonl, region as a list",
        JSONL_TEXT.replace(b'"region":"south"', b'"region":["south"]'),
        JSONL,
        422,
        "region",
        ("allowed", '["south"]'),
    ),
    ("empty csv", b"", CSV, 422, "body", ("empty", "0 bytes")),
    ("empty parquet", b"", PARQUET, 422, "body", ("empty",)),
    ("empty jsonl", b"", JSONL, 422, "body", ("empty",)),
    ("blank lines", b"\n\r\n  \n", CSV, 422, "body", ("empty",)),
    ("header only", DEMO_HEADER.encode() + b"\n", CSV, 422, "body", ("no rows",)),
    (
        "a form upload",
        b"--x\r\n\r\n" + CSV_TEXT + b"--x--",
        "multipart/form-data; boundary=x",
        415,
        "content-type",
        (),
    ),
]


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def limited(settings: MeshSettings) -> MeshSettings:
    return settings.model_copy(update={"max_upload_bytes": LIMIT})


@pytest.fixture
async def client(limited: MeshSettings, redis_client: aioredis.Redis) -> AsyncIterator[httpx.AsyncClient]:
    """The app on a server emptied first (``redis_client`` flushes it), so its consumer group stays."""
    async with serve(create_app(limited)) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield http


def refused(response: httpx.Response, status: int, field: str, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["field"] == field, body
    said = " ".join([body["error"], *(f["detail"] for f in body.get("failures", []))])
    for word in words:
        assert word in said, (word, body)
    return body


async def nothing_stored_or_announced(settings: MeshSettings, redis_client: aioredis.Redis) -> None:
    """No snapshot, no manifest, no temporary file left behind, and no `data.ingested`."""
    assert files_under(settings.effective_data_root) == []
    assert await stream_events(redis_client, events.DATA_INGESTED) == []


async def test_hostile_uploads_are_refused_naming_what_is_wrong_and_leave_nothing(
    client: httpx.AsyncClient, limited: MeshSettings, redis_client: aioredis.Redis
) -> None:
    for what, content, content_type, status, field, words in HOSTILE_UPLOADS:
        response = await client.post(
            "/datasets/demo/batches", content=content, headers={"content-type": content_type}
        )
        try:
            refused(response, status, field, *words)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from exc
    await nothing_stored_or_announced(limited, redis_client)
    # The service is unharmed: the same batch, whole, is taken.
    accepted = await client.post("/datasets/demo/batches", content=demo_csv(5), headers={"content-type": CSV})
    assert accepted.status_code == 201, accepted.text


async def test_every_failing_column_is_named_with_the_first_as_the_field(client: httpx.AsyncClient) -> None:
    bad = CSV_TEXT.replace(b"Z,21,", b"Z,abc,").replace(b",north,", b",mars,")
    body = refused(
        await client.post("/datasets/demo/batches", content=bad, headers={"content-type": CSV}), 422, "age"
    )
    assert {(f["column"], f["rule"]) for f in body["failures"]} == {("age", "type"), ("region", "allowed")}
    assert body["error"].startswith("batch rejected: age [type]")


async def test_uploads_past_the_size_limit_get_413_however_they_are_sent(
    client: httpx.AsyncClient, limited: MeshSettings, redis_client: aioredis.Redis
) -> None:
    big = demo_csv(2000)
    assert len(big) > LIMIT
    declared = await client.post("/datasets/demo/batches", content=big, headers={"content-type": CSV})
    refused(declared, 413, "body", str(LIMIT))

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted as it arrives
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    streamed = await client.post("/datasets/demo/batches", content=chunks(), headers={"content-type": CSV})
    assert "content-length" not in streamed.request.headers
    refused(streamed, 413, "body", str(LIMIT))
    await nothing_stored_or_announced(limited, redis_client)


# Dataset names that try to leave the config or data directories, as a client would send them.
ESCAPING_NAMES = [
    "%2E%2E",
    ".%2E",
    "%2E%2E%2F%2E%2E%2Fetc",
    "%2Fetc%2Fpasswd",
    "demo%00",
    "..%5C..%5Cdemo",
]


async def test_dataset_names_cannot_leave_the_data_root(
    client: httpx.AsyncClient, limited: MeshSettings, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    before = {p for p in tmp_path.rglob("*") if not p.is_relative_to(limited.state_dir)}
    for name in ESCAPING_NAMES:
        for method, path in (("POST", f"/datasets/{name}/batches"), ("GET", f"/datasets/{name}/snapshots")):
            response = await client.request(method, path, content=CSV_TEXT, headers={"content-type": CSV})
            assert response.status_code == 404, (name, response.text)
            body = response.json()
            # A name with a slash decoded in it no longer reaches a dataset route at all.
            if "%2F" not in name:
                assert body["field"] == "name", (name, body)
    # A file name a client attaches is not a path the service uses: the batch is stored by its hash.
    named = await client.post(
        "/datasets/demo/batches",
        content=demo_csv(3),
        headers={"content-type": CSV, "content-disposition": 'attachment; filename="../../../escaped.csv"'},
    )
    assert named.status_code == 201, named.text
    stored = files_under(limited.effective_data_root)
    assert [p.suffix for p in stored] == [".json", ".parquet"]
    assert all(p.parent == limited.effective_data_root / "datasets" / "demo" / "snapshots" for p in stored)
    assert {p for p in tmp_path.rglob("*") if not p.is_relative_to(limited.state_dir)} == before
    assert len(await stream_events(redis_client, events.DATA_INGESTED)) == 1


async def test_ingest_requested_reads_only_files_under_the_data_root(
    settings: MeshSettings, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    root = settings.effective_data_root
    incoming = root / "incoming"
    incoming.mkdir(parents=True)
    outside = tmp_path / "outside.csv"
    outside.write_bytes(demo_csv(4, seed=1))
    (incoming / "link.csv").symlink_to(outside)
    (incoming / "truncated.csv").write_bytes(cut_mid_row(CSV_TEXT, 3))
    (incoming / "huge.csv").write_bytes(demo_csv(10, seed=2) * 2)
    (incoming / "good.csv").write_bytes(demo_csv(6, seed=3))
    small = settings.model_copy(update={"max_upload_bytes": len(demo_csv(10, seed=2)) + 10})
    refusals = {
        str(outside): "outside the data root",
        outside.as_uri(): "outside the data root",
        "../../outside.csv": "outside the data root",
        "incoming/../../../outside.csv": "outside the data root",
        f"file://{incoming}/../../../outside.csv": "outside the data root",
        "/etc/passwd": "outside the data root",
        "file://elsewhere/etc/passwd": "names host",
        "https://example.invalid/batch.csv": "scheme",
        str(incoming / "link.csv"): "outside the data root",
        str(incoming / "missing.csv"): "not a readable file",
        str(incoming): "not a readable file",
        str(incoming / "truncated.csv"): "[fields]",
        str(incoming / "huge.csv"): "larger than",
    }
    requested = {}
    async with serve(create_app(small)):
        for uri in refusals:
            event = new_event(events.INGEST_REQUESTED, IngestRequested(dataset="demo", uri=uri))
            await redis_client.xadd(events.INGEST_REQUESTED, {"__data__": event.model_dump_json()})
            requested[event.event_id] = uri
        good = new_event(events.INGEST_REQUESTED, IngestRequested(dataset="demo", uri="incoming/good.csv"))
        await redis_client.xadd(events.INGEST_REQUESTED, {"__data__": good.model_dump_json()})

        async def all_handled() -> list[Any] | None:
            letters = await stream_events(redis_client, events.DEADLETTER)
            done = len(letters) == len(refusals) and await stream_events(redis_client, events.DATA_INGESTED)
            return letters if done else None

        letters = await wait_for(all_handled, timeout=20, what="every request handled")
    assert {letter.causation_id for letter in letters} == set(requested)
    for letter in letters:
        uri, error = requested[letter.causation_id], letter.payload.error
        assert error.startswith(("uri: ", "batch rejected: ")), (uri, error)
        assert refusals[uri] in error and letter.payload.attempts == 1, (uri, error)
    [ingested] = await stream_events(redis_client, events.DATA_INGESTED)
    assert ingested.causation_id == good.event_id and ingested.payload.row_count == 6
    stored = [p for p in files_under(root) if not p.is_relative_to(incoming)]
    assert sorted(p.suffix for p in stored) == [".json", ".parquet"]
    assert outside.read_bytes() == demo_csv(4, seed=1)
