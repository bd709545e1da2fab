"""Declared dataset schemas, kept under version control in ``<config_dir>/datasets/<name>.yaml``."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.ml.config_files import read_config

DType = Literal["int", "float", "str", "bool", "category", "datetime"]

POLARS_TYPES: dict[str, pl.DataType] = {
    "int": pl.Int64(),
    "float": pl.Float64(),
    "str": pl.String(),
    "bool": pl.Boolean(),
    "category": pl.String(),
    "datetime": pl.Datetime("us", "UTC"),
}

# Texts that files commonly hold for "no value": what pandas' read_csv reads as missing by default, and '?'
# (the UCI repository's marker). `mesh dataset init` declares those a sample's numeric columns hold.
KNOWN_NULL_MARKERS = (
    "NA", "N/A", "n/a", "na", "NaN", "nan", "-nan", "NULL", "null", "None", "<NA>", "#N/A", "#NA", "?",
)  # fmt: skip

DATASET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    dtype: DType
    required: bool = True
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = None
    max_null_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    description: str = ""

    @property
    def may_be_missing(self) -> bool:
        """Whether a record may lack this column or leave it empty."""
        return not self.required or self.max_null_rate > 0

    @model_validator(mode="after")
    def _rules_fit_type(self) -> ColumnSpec:
        if (self.min is not None or self.max is not None) and self.dtype not in ("int", "float"):
            raise ValueError(f"column {self.name}: min/max apply to int or float columns")
        if self.allowed is not None and self.dtype not in ("category", "str"):
            raise ValueError(f"column {self.name}: allowed values apply to category or str columns")
        if self.dtype == "category" and not self.allowed:
            raise ValueError(f"column {self.name}: a category column declares its allowed values")
        return self


class DatasetSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    target: str | None = Field(default=None, description="the label column, if the dataset is supervised")
    allow_extra_columns: bool = False
    null_values: list[str] = Field(
        default_factory=list,
        description="texts meaning a missing value in this dataset's files (e.g. NA, N/A, ?), in any column",
    )
    columns: list[ColumnSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSchema:
        if not DATASET_NAME.match(self.name):
            raise ValueError(f"dataset name {self.name!r} must match {DATASET_NAME.pattern}")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError("column names must be unique")
        if self.target is not None and self.target not in names:
            raise ValueError(f"target {self.target!r} is not a declared column")
        if any(not marker.strip() for marker in self.null_values):
            raise ValueError("null_values: a marker is blank (an empty value is always missing)")
        for col in self.columns:
            if both := sorted(set(col.allowed or []) & set(self.null_values)):
                raise ValueError(f"column {col.name}: allowed values {both} are also null_values")
        return self

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnSpec:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def polars_schema(self) -> dict[str, pl.DataType]:
        return {c.name: POLARS_TYPES[c.dtype] for c in self.columns}

    @property
    def schema_hash(self) -> str:
        # Without null markers, the hash a schema had before they could be declared: its feature sets keep
        # their ids.
        unset = set() if self.null_values else {"null_values"}
        canonical = json.dumps(
            self.model_dump(mode="json", exclude=unset), sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def as_missing(text: pl.Series, null_values: list[str]) -> pl.Series:
    """Text with its empty values and its dataset's null markers (compared stripped) made null."""
    missing = text == ""
    if null_values:
        missing = missing | text.str.strip_chars().is_in(null_values)
    return text.set(missing.fill_null(False), None)


def as_datetimes(series: pl.Series) -> pl.Series:
    """A column of times as the mesh holds them: microseconds in UTC, whatever a file, a request or a
    pandas frame carried. Text is parsed by polars (its format inferred; what does not read as a time is
    null), a time without a zone is taken as UTC, one with a zone is converted; a date is its midnight."""
    if series.dtype == pl.String:
        try:
            parsed = series.str.strip_chars().str.to_datetime(strict=False, time_unit="us")
        except pl.exceptions.ComputeError:  # no value reads as a time: polars finds no format to infer
            parsed = pl.Series(series.name, [None] * series.len(), dtype=pl.Datetime("us"))
    else:
        parsed = series.cast(pl.Datetime("us", getattr(series.dtype, "time_zone", None)), strict=False)
    zone = getattr(parsed.dtype, "time_zone", None)
    return parsed.dt.convert_time_zone("UTC") if zone else parsed.dt.replace_time_zone("UTC")


def datetime_values(name: str, values: list[Any]) -> pl.Series:
    """Values of a datetime column as records carry them (ISO text from JSON, ``datetime`` objects from
    validated requests, nulls), as :func:`as_datetimes` reads them."""
    text = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return as_datetimes(pl.Series(name, text, dtype=pl.String, strict=False))


def without_unnamed_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` without the columns whose header is blank: R's write.csv and pandas' to_csv write row
    numbers there, which are not data (and a column without a name cannot be declared)."""
    return frame.drop([column for column in frame.columns if not column.strip()])


class UnknownDataset(LookupError):
    pass


def dataset_path(config_dir: Path, name: str) -> Path:
    if not DATASET_NAME.match(name):
        raise UnknownDataset(f"dataset name {name!r} must match {DATASET_NAME.pattern}")
    return config_dir / "datasets" / f"{name}.yaml"


def load_schema(config_dir: Path, name: str) -> DatasetSchema:
    path = dataset_path(config_dir, name)
    if not path.is_file():
        known = sorted(p.stem for p in (config_dir / "datasets").glob("*.yaml"))
        raise UnknownDataset(f"dataset {name!r} is not declared (known: {', '.join(known) or 'none'})")
    schema = read_config(path, DatasetSchema)
    if schema.name != name:
        raise ValueError(f"{path} declares dataset {schema.name!r}, expected {name!r}")
    return schema
