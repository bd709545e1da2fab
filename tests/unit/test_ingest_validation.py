"""Ingest logic without a broker: formats, every validation rule, the content hash, the store."""

import io
from pathlib import Path

import polars as pl
import pytest

from services.ingest.batches import (
    BatchRejected,
    UnsupportedFormat,
    batch_format,
    content_hash,
    local_path,
    read_batch,
    validate_batch,
)
from shared.ml.datasets import DatasetSchema
from shared.ml.snapshots import SnapshotStore
from tests.support.data import demo_csv


def _frame(csv: bytes) -> pl.DataFrame:
    return read_batch(csv, "csv", "demo")


def _rules(failures: list) -> set[tuple[str, str]]:
    return {(f.column, f.rule) for f in failures}


def test_a_valid_batch_is_cast_to_the_declared_types(schema: DatasetSchema) -> None:
    frame, failures = validate_batch(_frame(demo_csv(8)), schema)
    assert failures == []
    assert frame.schema == pl.Schema(schema.polars_schema)
    assert frame.height == 8


def test_every_failing_column_and_rule_is_reported_at_once(schema: DatasetSchema) -> None:
    text = demo_csv(6).decode().splitlines()
    header, rows = text[0], [r.split(",") for r in text[1:]]
    rows[0][2] = "abc"  # age: not an int
    rows[1][2] = "7"  # age: below 18
    rows[2][8] = "mars"  # region: not allowed
    rows[3][5] = "-1"  # monthly_spend: below 0
    rows[4][3] = "12.5x"  # income: not a float
    rows[5][4] = "3.5"  # tenure_months: 3.5 would silently truncate
    for row in rows:
        row[10] = ""  # churned: missing everywhere
    csv = "\n".join([header + ",bonus", *(",".join(r) + ",1" for r in rows)]).encode()
    _, failures = validate_batch(_frame(csv), schema)
    assert _rules(failures) == {
        ("age", "type"),
        ("age", "min"),
        ("region", "allowed"),
        ("monthly_spend", "min"),
        ("income", "type"),
        ("tenure_months", "type"),
        ("churned", "nulls"),
        ("bonus", "unexpected"),
    }
    age_type = next(f for f in failures if f.column == "age" and f.rule == "type")
    assert "'abc'" in age_type.detail


def test_missing_required_column_and_optional_column(schema: DatasetSchema) -> None:
    frame = _frame(demo_csv(4)).drop("plan", "last_login_days")
    cast, failures = validate_batch(frame, schema)
    assert _rules(failures) == {("plan", "required")}  # last_login_days is optional
    assert cast["last_login_days"].null_count() == 4


def test_null_rate_limit(schema: DatasetSchema) -> None:
    frame = _frame(demo_csv(10)).with_columns(
        pl.when(pl.int_range(pl.len()) < 3)
        .then(None)
        .otherwise(pl.col("last_login_days"))
        .alias("last_login_days")
    )
    _, failures = validate_batch(frame, schema)
    assert _rules(failures) == {("last_login_days", "nulls")}
    assert "30.0%" in failures[0].detail


def test_empty_batch_is_rejected(schema: DatasetSchema) -> None:
    _, failures = validate_batch(_frame(demo_csv(0)), schema)
    assert ("*", "rows") in _rules(failures)


def test_malformed_bytes_are_a_format_failure() -> None:
    with pytest.raises(BatchRejected, match="format"):
        read_batch(b"PAR1 not really parquet", "parquet", "demo")


def test_the_same_rows_in_any_format_are_one_snapshot(schema: DatasetSchema) -> None:
    from_csv, _ = validate_batch(_frame(demo_csv(5)), schema)
    buffer = io.BytesIO()
    from_csv.write_parquet(buffer)
    from_parquet, _ = validate_batch(read_batch(buffer.getvalue(), "parquet", "demo"), schema)
    jsonl = (
        from_csv.with_columns(pl.col("event_time").dt.to_string("%Y-%m-%dT%H:%M:%SZ")).write_ndjson().encode()
    )
    from_jsonl, failures = validate_batch(read_batch(jsonl, "jsonl", "demo"), schema)
    assert failures == []
    ids = {content_hash("demo", f) for f in (from_csv, from_parquet, from_jsonl)}
    assert len(ids) == 1


def test_different_content_gives_a_different_snapshot_id(schema: DatasetSchema) -> None:
    a, _ = validate_batch(_frame(demo_csv(5, seed=1)), schema)
    b, _ = validate_batch(_frame(demo_csv(5, seed=2)), schema)
    assert content_hash("demo", a) != content_hash("demo", b)
    assert content_hash("demo", a) != content_hash("other", a)
    assert content_hash("demo", a) == content_hash("demo", a.clone())


@pytest.mark.parametrize(
    ("content_type", "filename", "expected"),
    [
        ("text/csv; charset=utf-8", None, "csv"),
        ("application/vnd.apache.parquet", None, "parquet"),
        ("application/x-ndjson", None, "jsonl"),
        (None, "batch.PARQUET", "parquet"),
        ("application/octet-stream", "b.jsonl", "jsonl"),
    ],
)
def test_batch_format(content_type: str | None, filename: str | None, expected: str) -> None:
    assert batch_format(content_type, filename) == expected


def test_unknown_format_names_the_supported_ones() -> None:
    with pytest.raises(UnsupportedFormat, match="text/csv"):
        batch_format("application/pdf")


def test_local_path_accepts_paths_and_file_uris(tmp_path: Path) -> None:
    assert local_path(str(tmp_path / "a b.csv")) == tmp_path / "a b.csv"
    assert local_path("file:///data/a%20b.csv") == Path("/data/a b.csv")
    with pytest.raises(ValueError, match="scheme 's3'"):
        local_path("s3://bucket/x.csv")


def test_store_lists_only_committed_snapshots(tmp_path: Path, schema: DatasetSchema) -> None:
    store = SnapshotStore(tmp_path)
    frame, _ = validate_batch(_frame(demo_csv(3)), schema)
    store.write_data("demo", "abc", frame)
    assert store.list("demo") == []  # data without its manifest is not a snapshot yet
    assert pl.read_parquet(store.parquet_path("demo", "abc")).equals(frame)
