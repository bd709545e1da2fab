"""Batches: read one, validate it against its dataset's declared schema, and store it as an immutable,
content-addressed Parquet snapshot. Plain functions over a snapshot store; no broker, no HTTP.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import hashlib
import io
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

import polars as pl
from pydantic import BaseModel

from shared.events import DataIngested, Envelope, utcnow
from shared.ml.datasets import ColumnSpec, DatasetSchema, as_datetimes, as_missing, without_unnamed_columns
from shared.ml.snapshots import SnapshotManifest, SnapshotStore

BatchFormat = Literal["csv", "parquet", "jsonl"]

CONTENT_TYPES: dict[str, BatchFormat] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/parquet": "parquet",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/jsonlines": "jsonl",
    "application/json-lines": "jsonl",
}
SUFFIXES: dict[str, BatchFormat] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
EXAMPLES_SHOWN = 3
INT64_BOUND = 2.0**63
# Byte order marks of encodings other than UTF-8, longest first (UTF-32's begin with UTF-16's).
UTF_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)
# The column of a failure of the batch as a whole (not readable, no rows), rather than of one column.
WHOLE_BATCH = "*"


class UnsupportedFormat(ValueError):
    pass


class ColumnFailure(BaseModel):
    column: str
    rule: str
    detail: str


class BatchRejected(Exception):
    def __init__(self, dataset: str, failures: list[ColumnFailure]) -> None:
        self.dataset = dataset
        self.failures = failures
        super().__init__(self.summary())

    def summary(self) -> str:
        return "; ".join(f"{f.column} [{f.rule}]: {f.detail}" for f in self.failures)

    @property
    def field(self) -> str:
        """What a refusal names: the first failing column, or ``body`` when the batch as a whole failed."""
        column = self.failures[0].column
        return "body" if column == WHOLE_BATCH else column


def batch_format(content_type: str | None = None, filename: str | None = None) -> BatchFormat:
    """The batch format named by a content type (parameters ignored) or, failing that, a file suffix."""
    if content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        if media in CONTENT_TYPES:
            return CONTENT_TYPES[media]
        if not filename:
            raise UnsupportedFormat(
                f"content-type {media!r} is not supported; use one of: {', '.join(sorted(CONTENT_TYPES))}"
            )
    if filename and (suffix := Path(filename).suffix.lower()) in SUFFIXES:
        return SUFFIXES[suffix]
    raise UnsupportedFormat(
        f"cannot tell the format of {filename or 'the batch'}; "
        f"send a content-type ({', '.join(sorted(CONTENT_TYPES))}) or use a .csv/.parquet/.jsonl file"
    )


def _whole_batch(dataset: str, rule: str, detail: str) -> BatchRejected:
    return BatchRejected(dataset, [ColumnFailure(column=WHOLE_BATCH, rule=rule, detail=detail)])


def _utf8_text(data: bytes, fmt: BatchFormat, dataset: str) -> str:
    """CSV and JSON lines are UTF-8 text: any other encoding is refused, saying where it shows, rather
    than read as garbled column names (UTF-16) or failing deep in the parser (Latin-1)."""
    for bom, encoding in UTF_BOMS:
        if data.startswith(bom):
            detail = f"the batch is {encoding} (it starts with its byte order mark); send it as UTF-8"
            raise _whole_batch(dataset, "encoding", detail)
    if (nul := data.find(b"\x00")) >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise _whole_batch(
            dataset,
            "encoding",
            f"a NUL byte on line {line}: not {fmt} text (UTF-16, or a binary file?); send it as UTF-8",
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _whole_batch(
            dataset,
            "encoding",
            f"byte {data[exc.start]:#04x} on line {line} is not UTF-8 (Latin-1 or another encoding?); "
            "send it as UTF-8",
        ) from None


def _require_whole_records(text: str, dataset: str) -> None:
    """Every CSV record has as many fields as the header: a short one is a file cut mid-row (which polars
    would pad with empty values and let through), a long one a stray separator."""
    reader = csv.reader(io.StringIO(text, newline=""))
    uneven: list[str] = []
    count = 0
    try:
        header = next(reader, [])
        for record in reader:
            if record and len(record) != len(header):
                count += 1
                if len(uneven) < EXAMPLES_SHOWN:
                    uneven.append(f"line {reader.line_num}: {len(record)}")
    except csv.Error as exc:  # a field past the csv module's size limit, a quote left open
        raise _whole_batch(dataset, "format", f"not valid csv: line {reader.line_num}: {exc}") from None
    if count:
        raise _whole_batch(
            dataset,
            "fields",
            f"{count} row(s) do not have the header's {len(header)} fields (e.g. {'; '.join(uneven)}): "
            "a truncated or malformed file?",
        )


def _first_bad_json_line(data: bytes) -> str | None:
    """Where a JSON lines batch polars refused goes wrong, by line (read again only once refused)."""
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            return f"line {number} is not JSON ({exc}): a truncated or malformed file?"
        if not isinstance(value, dict):
            return f"line {number} is not a JSON object"
    return None


def read_batch(data: bytes, fmt: BatchFormat, dataset: str) -> pl.DataFrame:
    """Parse raw bytes; CSV is read as text so type errors can be reported value by value later.

    What cannot be read is refused as a whole, saying why: an empty batch, text that is not UTF-8, CSV rows
    cut short, a file polars cannot parse (a truncated Parquet file, a JSON line cut mid-way). An unnamed
    column (the row numbers R and pandas write) is not read."""
    if not data.strip():
        raise _whole_batch(dataset, "empty", f"the batch is empty ({len(data)} bytes)")
    if fmt in ("csv", "jsonl"):
        text = _utf8_text(data, fmt, dataset)
        if fmt == "csv":
            _require_whole_records(text, dataset)
    try:
        if fmt == "csv":
            frame = pl.read_csv(io.BytesIO(data), infer_schema=False)
        elif fmt == "parquet":
            frame = pl.read_parquet(io.BytesIO(data))
        else:
            frame = pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
    except Exception as exc:  # polars raises several error types for malformed input
        where = _first_bad_json_line(data) if fmt == "jsonl" else None
        raise _whole_batch(dataset, "format", where or f"not valid {fmt}: {exc}") from exc
    return without_unnamed_columns(frame)


def _examples(values: pl.Series) -> str:
    shown = values.unique(maintain_order=True).head(EXAMPLES_SHOWN).to_list()
    return ", ".join(repr(v) for v in shown)


def _cast(series: pl.Series, col: ColumnSpec) -> pl.Series:
    """Cast without raising: a value that cannot be cast becomes null (counted as a type failure)."""
    if col.dtype in ("str", "category"):
        return series.cast(pl.String, strict=False)
    if col.dtype == "bool":
        if series.dtype == pl.Boolean:
            return series
        truth = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
        text = series.cast(pl.String, strict=False).str.strip_chars().str.to_lowercase()
        return text.replace_strict(truth, default=None, return_dtype=pl.Boolean)
    if col.dtype == "datetime":
        return as_datetimes(series)
    if col.dtype == "int":
        if series.dtype == pl.String:
            series = series.str.strip_chars()
        as_float = series.cast(pl.Float64, strict=False)
        # 3.0 is an int; 3.5 is not (it would silently truncate), nor is what no 64-bit int holds.
        integral = (
            as_float.is_finite() & (as_float == as_float.floor()) & (as_float.abs() < INT64_BOUND)
        ).fill_null(False)
        return pl.select(pl.when(integral).then(as_float).otherwise(None).cast(pl.Int64).alias(col.name))[
            col.name
        ]
    if series.dtype == pl.String:
        series = series.str.strip_chars()
    as_float = series.cast(pl.Float64, strict=False)
    # NaN and infinity ("nan", "inf" in a CSV) are no measurement: models cannot be fitted on them.
    return as_float.set(~as_float.is_finite().fill_null(True), None)


def validate_batch(frame: pl.DataFrame, schema: DatasetSchema) -> tuple[pl.DataFrame, list[ColumnFailure]]:
    """Check every declared rule; return the frame cast to the schema, and every failure found.

    All columns are checked (not just the first failing one), so one report lists everything to fix.
    """
    failures: list[ColumnFailure] = []
    rows = frame.height
    if rows == 0:
        failures.append(ColumnFailure(column=WHOLE_BATCH, rule="rows", detail="the batch has no rows"))
    if not schema.allow_extra_columns:
        for extra in sorted(set(frame.columns) - set(schema.column_names)):
            failures.append(
                ColumnFailure(
                    column=extra, rule="unexpected", detail="column is not declared in the dataset schema"
                )
            )

    cast_columns: list[pl.Series] = []
    for col in schema.columns:
        if col.name not in frame.columns:
            if col.required:
                failures.append(
                    ColumnFailure(column=col.name, rule="required", detail="required column is missing")
                )
            cast_columns.append(pl.Series(col.name, [None] * rows, dtype=schema.polars_schema[col.name]))
            continue

        raw = frame[col.name]
        if raw.dtype == pl.String:
            # Empty CSV cells are missing values, not empty strings; so are the dataset's null markers.
            raw = as_missing(raw, schema.null_values)
        try:
            cast = _cast(raw, col)
            found = ""
        except pl.exceptions.PolarsError:
            # A type with no reading as the declared one (lists, objects, bytes): every value fails.
            cast = pl.Series(col.name, [None] * rows, dtype=schema.polars_schema[col.name])
            found = f"they are {raw.dtype}"
        type_errors = raw.is_not_null() & cast.is_null()
        if (bad := int(type_errors.sum())) > 0:
            found = found or f"e.g. {_examples(raw.filter(type_errors))}"
            failures.append(
                ColumnFailure(
                    column=col.name, rule="type", detail=f"{bad} value(s) are not {col.dtype} ({found})"
                )
            )

        nulls = int(raw.is_null().sum())
        if rows and nulls / rows > col.max_null_rate:
            failures.append(
                ColumnFailure(
                    column=col.name,
                    rule="nulls",
                    detail=f"{nulls} of {rows} values are missing ({nulls / rows:.1%}; "
                    f"at most {col.max_null_rate:.1%} allowed)",
                )
            )

        present = cast.drop_nulls()
        if col.min is not None and (low := present.filter(present < col.min)).len():
            failures.append(
                ColumnFailure(
                    column=col.name,
                    rule="min",
                    detail=f"{low.len()} value(s) below the minimum {col.min:g} (e.g. {_examples(low)})",
                )
            )
        if col.max is not None and (high := present.filter(present > col.max)).len():
            failures.append(
                ColumnFailure(
                    column=col.name,
                    rule="max",
                    detail=f"{high.len()} value(s) above the maximum {col.max:g} (e.g. {_examples(high)})",
                )
            )
        if col.allowed is not None and (odd := present.filter(~present.is_in(col.allowed))).len():
            failures.append(
                ColumnFailure(
                    column=col.name,
                    rule="allowed",
                    detail=f"{odd.len()} value(s) outside {col.allowed} (e.g. {_examples(odd)})",
                )
            )
        cast_columns.append(cast.alias(col.name))

    return pl.DataFrame(cast_columns), failures


def content_hash(dataset: str, frame: pl.DataFrame) -> str:
    """Snapshot id: a hash of the validated content, independent of the upload format.

    The canonical form is CSV of the schema-cast frame (stable across library versions, unlike
    Parquet bytes or polars' row hashes), so the same rows sent as CSV or Parquet are one snapshot.
    """
    digest = hashlib.sha256()
    digest.update(f"{dataset}\n".encode())
    digest.update(json.dumps({c: str(t) for c, t in frame.schema.items()}, sort_keys=True).encode())
    digest.update(frame.write_csv().encode())
    return digest.hexdigest()[:24]


@dataclass(frozen=True)
class IngestOutcome:
    manifest: SnapshotManifest
    duplicate: bool

    def log_fields(self) -> dict[str, Any]:
        """What the log line of a stored batch says, whichever way the batch came in."""
        return {
            "dataset": self.manifest.dataset,
            "snapshot_id": self.manifest.snapshot_id,
            "duplicate": self.duplicate,
        }


Announce = Callable[[DataIngested, Envelope[Any] | None], Awaitable[Envelope[Any]]]


async def ingest_batch(
    store: SnapshotStore,
    schema: DatasetSchema,
    data: bytes,
    fmt: BatchFormat,
    *,
    source: str,
    announce: Announce,
    cause: Envelope[Any] | None = None,
    trigger_training: bool = True,
) -> IngestOutcome:
    """Validate and store one batch, then announce it; a batch already stored is recognised, not repeated.

    Order matters for at-least-once: data file, manifest (not yet announced), the event, then the
    manifest marked announced. Whoever receives the event already finds the snapshot listed; a crash
    before the mark means the next identical upload announces again, with the same event id.
    """

    def prepare() -> tuple[pl.DataFrame, str]:
        frame, failures = validate_batch(read_batch(data, fmt, schema.name), schema)
        if failures:
            raise BatchRejected(schema.name, failures)
        return frame, content_hash(schema.name, frame)

    frame, snapshot_id = await asyncio.to_thread(prepare)
    existing = store.manifest(schema.name, snapshot_id)
    if existing is not None and existing.announced:
        return IngestOutcome(existing, duplicate=True)

    path = await asyncio.to_thread(store.write_data, schema.name, snapshot_id, frame)
    payload = DataIngested(
        dataset=schema.name,
        snapshot_id=snapshot_id,
        path=str(path.resolve()),
        row_count=frame.height,
        schema_hash=schema.schema_hash,
        trigger_training=trigger_training,
    )
    manifest = existing or SnapshotManifest(
        dataset=schema.name,
        snapshot_id=snapshot_id,
        path=payload.path,
        row_count=frame.height,
        schema_hash=schema.schema_hash,
        source=source,
        created_at=utcnow().isoformat(),
        event_id="",
        announced=False,
    )
    store.commit(manifest)
    event = await announce(payload, cause)
    manifest = manifest.model_copy(update={"event_id": event.event_id, "announced": True})
    store.commit(manifest)
    return IngestOutcome(manifest, duplicate=False)


def local_path(uri: str) -> Path:
    """A filesystem path from a plain path or a ``file://`` URI; other schemes and hosts are not reachable."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"uri: scheme {parsed.scheme!r} is not supported (use a path or file:// URI)")
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(f"uri: {uri} names host {parsed.netloc!r}; only local files are read")
    return Path(unquote(parsed.path) if parsed.scheme else uri)


def source_file(uri: str, data_root: Path) -> Path:
    """The file an ``ingest.requested`` names (a relative path is taken from the data root), which must lie
    under the data root once resolved: no event may have ingest read, and store, whatever else the
    service's user can read (through ``../``, an absolute path or a symlink out)."""
    root = data_root.resolve()
    path = (root / local_path(uri)).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"uri: {uri} is outside the data root {root}; only files under it are ingested")
    return path
