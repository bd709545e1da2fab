"""Request records: the pydantic model of one record, built from the dataset schema for the model's raw
inputs, and the validation of a request's records into a typed frame."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import polars as pl
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model
from pydantic_core import PydanticCustomError

from shared.ml.datasets import DatasetSchema, as_datetimes


class RecordError(ValueError):
    """A request record that does not fit the model's inputs; ``field`` names where."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


IGNORED = "declared in the dataset but not an input of the model: accepted, and ignored"


def _read_time(value: Any) -> Any:
    """A time as a record carries it: text that ingest would read as a time (polars' parser, the same
    one), or a ``datetime``. A number is refused: seconds or milliseconds since when, in which zone?"""
    if isinstance(value, datetime) or value is None:
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("time_type", "a date and time is required, as text (ISO 8601)")
    parsed = as_datetimes(pl.Series([value], dtype=pl.String))[0]
    if parsed is None:
        raise PydanticCustomError(
            "time_parsing", "{value} is no date and time (e.g. 2026-01-31T17:30:00Z)", {"value": repr(value)}
        )
    return parsed


# A datetime input: read as ingest reads the dataset's files, so a request's time gives the model the
# same parts (hour, weekday, ...) as the same time did in training; in UTC, as the mesh holds times.
RecordTime = Annotated[datetime, BeforeValidator(_read_time, json_schema_input_type=str)]


def record_model(schema: DatasetSchema, columns: list[str]) -> type[BaseModel]:
    """A pydantic model of one request record: the model's raw inputs, their types, ranges and categories.

    The dataset's other columns (an id, a timestamp, text no feature reads, the label) are accepted and
    left out of the record, so a row sent as the data holds it is answered; a name the dataset does not
    declare (a typo) is still refused, naming it."""
    fields: dict[str, Any] = {
        column.name: (Any, Field(default=None, exclude=True, description=IGNORED))
        for column in schema.columns
        if column.name not in columns
    }
    for name in columns:
        col = schema.column(name)
        kind: Any
        constraints: dict[str, Any] = {}
        if col.dtype == "int":
            kind = int
        elif col.dtype == "float":
            kind = float
        elif col.dtype == "bool":
            kind = bool
        elif col.dtype == "datetime":
            kind = RecordTime
        elif col.allowed:
            kind = Literal[tuple(col.allowed)]
        else:
            kind = str
        if col.min is not None:
            constraints["ge"] = col.min
        if col.max is not None:
            constraints["le"] = col.max
        optional = col.may_be_missing
        annotation = kind | None if optional else kind
        fields[name] = (annotation, Field(default=None if optional else ..., **constraints))
    config = ConfigDict(extra="forbid", strict=False)
    return create_model("Record", __config__=config, **fields)


def validate_records(
    record: type[BaseModel], dtypes: dict[str, pl.DataType], records: list[Any], where: str
) -> pl.DataFrame:
    """Records -> a frame of ``dtypes``, or RecordError naming the first bad field (``features.age``)."""
    alone = len(records) == 1 and where == "features"
    rows = [validated_row(record, raw, where if alone else f"{where}[{i}]") for i, raw in enumerate(records)]
    return pl.DataFrame(rows, schema=dtypes, orient="row")


def validated_row(record: type[BaseModel], raw: Any, where: str) -> dict[str, Any]:
    """One record -> its validated fields, or RecordError naming the first bad one under ``where``."""
    if not isinstance(raw, dict):
        raise RecordError(where, "must be an object of named fields")
    try:
        return record.model_validate(raw).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(p) for p in first["loc"])
        raise RecordError(f"{where}.{location}" if location else where, first["msg"]) from None
