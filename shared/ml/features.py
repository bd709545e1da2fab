"""Declared features: one pipeline of polars expressions, used to build training frames (features
service) and inside every served model (serving, registry), so a request is transformed exactly as
training data was.

A spec lives under version control in ``<config_dir>/features/<dataset>.yaml``. Operations that learn
from data (group statistics) are *fitted* on the training split only and carried as ``state``, so the
holdout and live traffic never leak into them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.ml.config_files import read_config
from shared.ml.datasets import DatasetSchema, as_datetimes, datetime_values, load_schema

GLOBAL_KEY = "__global__"
# Up to this many keys a value -> number lookup is a chain of equality tests, beyond it a hash lookup. Polars
# compares short strings by their inline prefix, so a test costs ~1.8 ms per 1M rows while hashing every
# row costs ~11-15 ms whatever the keys; on one record the chain is also 2-3x cheaper (bench.features).
CHAINED_LOOKUP_KEYS = 6
# From this many rows a transform runs as a lazy query: planning costs ~0.3 ms, which one record must not
# pay, but the optimised plan runs a 1M-row demo transform in ~32 ms instead of ~45 eagerly. The results
# are bit-identical either way (same expressions, same kernels).
LAZY_FROM_ROWS = 100_000


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)


class Numeric(_Op):
    op: Literal["numeric"]
    source: str
    fill: float | None = None


class Log1p(_Op):
    op: Literal["log1p"]
    source: str
    fill: float | None = None


class Ratio(_Op):
    op: Literal["ratio"]
    numerator: str
    denominator: str
    scale: float = 1.0


class IsNull(_Op):
    op: Literal["is_null"]
    source: str


class OneHot(_Op):
    op: Literal["one_hot"]
    source: str


class Ordinal(_Op):
    op: Literal["ordinal"]
    source: str
    order: list[str] = Field(min_length=1)


class GroupRatio(_Op):
    """``source`` relative to its mean within ``by`` (mean fitted on the training split)."""

    op: Literal["group_ratio"]
    source: str
    by: str


# The parts of a time a datetime_part reads; each is polars' ``.dt`` accessor of that name (weekday:
# Monday 1 .. Sunday 7), but for the day of the year, which polars calls the ordinal day.
TimePart = Literal["year", "quarter", "month", "day", "weekday", "day_of_year", "hour", "minute"]


Times = TypeVar("Times", pl.Expr, pl.Series)


def time_part(times: Times, part: TimePart) -> Times:
    """``part`` of each time in ``times`` (an expression or a column of datetimes)."""
    return getattr(times.dt, "ordinal_day" if part == "day_of_year" else part)()


class DatetimePart(_Op):
    """One calendar or clock field of a datetime column, read in UTC (where the mesh holds times)."""

    op: Literal["datetime_part"]
    source: str
    part: TimePart
    fill: float | None = None


FeatureOp = Annotated[
    Numeric | Log1p | Ratio | IsNull | OneHot | Ordinal | GroupRatio | DatetimePart, Field(discriminator="op")
]


class WindowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    last_snapshots: int = Field(default=5, ge=1)


class SplitSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    holdout_fraction: float = Field(default=0.25, gt=0, lt=1)
    seed: int = 0


class FeatureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    target: str
    id_column: str | None = Field(
        default=None,
        description="keeps a row on one side of the split as the window grows (default: its content)",
    )
    window: WindowSpec = WindowSpec()
    split: SplitSpec = SplitSpec()
    features: list[FeatureOp] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> FeatureSpec:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        return self

    @property
    def spec_hash(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def input_columns(self) -> list[str]:
        """The raw columns a record must carry to be transformed (what /predict accepts)."""
        seen: dict[str, None] = {}
        for f in self.features:
            for attr in ("source", "numerator", "denominator", "by"):
                if (col := getattr(f, attr, None)) is not None:
                    seen[col] = None
        return list(seen)


def load_feature_spec(config_dir: Path, dataset: str) -> FeatureSpec:
    path = config_dir / "features" / f"{dataset}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no feature spec for dataset {dataset!r} at {path}")
    spec = read_config(path, FeatureSpec)
    schema = load_schema(config_dir, dataset)
    check_spec_against_schema(spec, schema)
    return spec


def check_spec_against_schema(spec: FeatureSpec, schema: DatasetSchema) -> None:
    declared = set(schema.column_names)
    used = [*spec.input_columns, spec.target, *([spec.id_column] if spec.id_column else [])]
    missing = [c for c in used if c not in declared]
    if missing:
        raise ValueError(f"feature spec for {spec.dataset!r} uses undeclared columns: {missing}")
    for f in spec.features:
        if isinstance(f, OneHot) and not schema.column(f.source).allowed:
            raise ValueError(f"feature {f.name}: one_hot needs a column with declared allowed values")
        if isinstance(f, DatetimePart) and schema.column(f.source).dtype != "datetime":
            raise ValueError(f"feature {f.name}: datetime_part needs a datetime column; {f.source!r} is not")


class FeaturePipeline:
    """Spec + schema + fitted state -> polars expressions producing a Float64 matrix."""

    def __init__(
        self, spec: FeatureSpec, schema: DatasetSchema, state: dict[str, dict[str, float]] | None = None
    ):
        self.spec = spec
        self.schema = schema
        self.state = state or {}
        self._compiled: list[pl.Expr] | None = None

    @property
    def output_columns(self) -> list[str]:
        columns: list[str] = []
        for f in self.spec.features:
            if isinstance(f, OneHot):
                columns.extend(f"{f.name}={value}" for value in self.schema.column(f.source).allowed or [])
            else:
                columns.append(f.name)
        return columns

    def fit(self, frame: pl.DataFrame) -> FeaturePipeline:
        state: dict[str, dict[str, float]] = {}
        for f in self.spec.features:
            if isinstance(f, GroupRatio):
                # One chunk, rounded: polars' parallel mean over a multi-chunk frame differs in the last
                # bits from run to run, and the same inputs must give the same feature set. Rounded after
                # the aggregation: inside it, round() takes polars' per-group path (1M rows: 15 ms, not 5).
                means = (
                    frame.rechunk()
                    .group_by(f.by)
                    .agg(pl.col(f.source).cast(pl.Float64).mean())
                    .drop_nulls()
                    .with_columns(pl.col(f.source).round(9))
                )
                table = {str(k): float(v) for k, v in means.iter_rows()}
                overall = frame[f.source].cast(pl.Float64).rechunk().mean()
                table[GLOBAL_KEY] = float(overall) if isinstance(overall, int | float) else 0.0
                state[f.name] = table
        self.state = state
        self._compiled = None
        return self

    def _expressions(self) -> list[pl.Expr]:
        exprs: list[pl.Expr] = []
        for f in self.spec.features:
            if isinstance(f, Numeric | Log1p):
                col = pl.col(f.source).cast(pl.Float64)
                if f.fill is not None:
                    col = col.fill_null(f.fill)
                exprs.append((col.log1p() if isinstance(f, Log1p) else col).alias(f.name))
            elif isinstance(f, Ratio):
                num, den = pl.col(f.numerator).cast(pl.Float64), pl.col(f.denominator).cast(pl.Float64)
                exprs.append((num * f.scale / (den.abs() + 1.0)).alias(f.name))
            elif isinstance(f, IsNull):
                exprs.append(pl.col(f.source).is_null().cast(pl.Float64).alias(f.name))
            elif isinstance(f, OneHot):
                for value in self.schema.column(f.source).allowed or []:
                    exprs.append(
                        (pl.col(f.source) == value)
                        .fill_null(False)
                        .cast(pl.Float64)
                        .alias(f"{f.name}={value}")
                    )
            elif isinstance(f, Ordinal):
                ranks = {v: float(i) for i, v in enumerate(f.order)}
                exprs.append(lookup(pl.col(f.source), ranks, default=-1.0).alias(f.name))
            elif isinstance(f, DatetimePart):
                part = time_part(pl.col(f.source), f.part).cast(pl.Float64)
                exprs.append((part if f.fill is None else part.fill_null(f.fill)).alias(f.name))
            elif isinstance(f, GroupRatio):
                table = self.state.get(f.name)
                if table is None:
                    raise RuntimeError(f"feature {f.name} needs fitting before transform")
                means = {k: v for k, v in table.items() if k != GLOBAL_KEY}
                mean = lookup(pl.col(f.by).cast(pl.String), means, default=table[GLOBAL_KEY])
                exprs.append((pl.col(f.source).cast(pl.Float64) / (mean.abs() + 1e-9)).alias(f.name))
        return exprs

    def transform(self, frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
        if self._compiled is None:
            self._compiled = self._expressions()
        if isinstance(frame, pl.DataFrame) and frame.height < LAZY_FROM_ROWS:
            return frame.select(self._compiled)
        return frame.lazy().select(self._compiled).collect()

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.model_dump(mode="json"),
            "schema": self.schema.model_dump(mode="json"),
            "state": self.state,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeaturePipeline:
        return cls(
            FeatureSpec.model_validate(data["spec"]),
            DatasetSchema.model_validate(data["schema"]),
            data.get("state") or {},
        )


def lookup(key: pl.Expr, table: dict[str, float], default: float) -> pl.Expr:
    """``table[key]`` as a Float64 expression, ``default`` for a key not in the table or null."""
    if len(table) > CHAINED_LOOKUP_KEYS:
        return key.replace_strict(table, default=default, return_dtype=pl.Float64)
    found = pl.lit(default, dtype=pl.Float64)
    for value, number in reversed(table.items()):
        found = pl.when(key == value).then(pl.lit(number, dtype=pl.Float64)).otherwise(found)
    return found


def as_polars(records: Any, columns: list[str], schema: DatasetSchema) -> pl.DataFrame:
    """Raw records (polars, pandas, or a list of dicts) as a polars frame with the declared dtypes."""
    times = [c for c in columns if schema.column(c).dtype == "datetime"]
    if isinstance(records, pl.DataFrame):
        frame = records
    elif isinstance(records, list):
        # An explicit schema, not inference from the first records: a field first seen late must not be lost.
        # Times come as text (JSON) or datetime objects, which polars' row reader takes only one of.
        dtypes = {c: schema.polars_schema[c] for c in columns if c not in times}
        frame = pl.DataFrame(records, schema=dtypes, strict=False)
        if times:
            parsed = pl.DataFrame([datetime_values(c, [r.get(c) for r in records]) for c in times])
            frame = pl.concat([frame, parsed], how="horizontal") if dtypes else parsed
    else:  # pandas, as MLflow's pyfunc and signature checks hand it over
        frame = pl.from_pandas(records)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        frame = frame.with_columns(pl.lit(None, dtype=schema.polars_schema[c]).alias(c) for c in missing)
    # In UTC, as ingest stored them: a time parts are read from must not depend on the zone it came in.
    held = pl.Datetime("us", "UTC")
    return frame.with_columns(as_datetimes(frame[c]) for c in times if frame.schema[c] != held)


def __getattr__(name: str) -> Any:
    # Models saved before the scikit-learn steps moved to shared.ml.steps name the transformer here; loading
    # them imports it from there. Not imported at the top: it would bring scikit-learn into every process
    # that only reads feature specs.
    if name == "FeatureTransformer":
        from shared.ml.steps import FeatureTransformer

        return FeatureTransformer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
