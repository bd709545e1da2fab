"""Declaring a dataset: the four files of ``<config_dir>`` that make one (``datasets/``, ``features/``,
``models/`` and ``monitor/<name>.yaml``), inferred from a sample of its data (``mesh dataset init``) and
checked together (``mesh dataset check``).

Each file is validated by its own model (DatasetSchema, FeatureSpec, ModelConfig, MonitorConfig); what
only shows when the files are read together (a feature of a column the schema does not declare, a task
its target cannot be, a monitor of another model) is checked here. Every problem is named by file and
field, and all of them are reported, not only the first.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from shared.ml.config_files import ConfigProblem, InvalidConfig, problems_of, read_config
from shared.ml.datasets import (
    DATASET_NAME,
    KNOWN_NULL_MARKERS,
    DatasetSchema,
    as_datetimes,
    as_missing,
    without_unnamed_columns,
)
from shared.ml.estimators import EstimatorConfig, estimator_problems
from shared.ml.features import (
    DatetimePart,
    FeatureOp,
    FeatureSpec,
    GroupRatio,
    Log1p,
    Numeric,
    OneHot,
    Ordinal,
    Ratio,
    TimePart,
    time_part,
)
from shared.ml.modeling import ModelConfig
from shared.ml.monitoring import MonitorConfig
from shared.ml.tasks import (
    DEFAULT_LIVE_METRIC,
    DEFAULT_PRIMARY_METRIC,
    LIVE_METRICS,
    TASK_KINDS,
    infer_task,
)

# The four files of a dataset, in the order they are read and written, and the model each is.
KINDS: tuple[str, ...] = ("datasets", "features", "models", "monitor")
MODELS: dict[str, type[BaseModel]] = {
    "datasets": DatasetSchema,
    "features": FeatureSpec,
    "models": ModelConfig,
    "monitor": MonitorConfig,
}
# What a sample file may be, by suffix.
SAMPLE_FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}

# Inference rules.
MAX_CATEGORIES = (
    20  # a text column with at most this many distinct values (and < half the rows) is a category
)
# An integer column holding each number of a range once, in a sample of at least this many rows, is a row
# number or a counter id: no feature (its value says where a row sits in a file, not what it is).
ROW_NUMBER_MIN_ROWS = 20
# Below this many rows a sample gets a random forest: gradient boosting's leaves take 20 rows each, so on
# a holdout-split sample of ~30 rows (R's mtcars) it cannot split at all and predicts a constant.
FEW_ROWS = 100
MOSTLY_NUMERIC = 0.9  # a text column with more than this share of numbers (but not all) is ambiguous
EXAMPLES_SHOWN = 3
NUMERIC_DTYPES = ("int", "float")
FEATURE_OP_ADAPTER: TypeAdapter[Any] = TypeAdapter(FeatureOp)


# Beyond this many distinct labels, a target is an id or free text more likely than a class.
MAX_CLASSES = 100


class DeclarationError(ValueError):
    """A sample, a target or a declaration that cannot make a dataset, in words a person can act on."""


def config_path(config_dir: Path, kind: str, name: str) -> Path:
    """Where the ``kind`` file (one of KINDS) of dataset ``name`` lives."""
    return config_dir / kind / f"{name}.yaml"


def config_paths(config_dir: Path, name: str) -> dict[str, Path]:
    return {kind: config_path(config_dir, kind, name) for kind in KINDS}


# --- checking the four files together -----------------------------------------------------------------


@dataclass
class _Column:
    dtype: str
    allowed: list[str] | None = None


@dataclass
class _Views:
    """What each file says, as far as it could be read: a file that fails its own model is still read
    leniently so the checks across files run on what it does say."""

    schema_name: Any = None
    target: Any = None
    columns: dict[str, _Column] | None = None  # None: the schema could not be read at all
    spec: dict[str, Any] | None = None  # dataset, target, id_column
    features: list[tuple[int, Any]] = field(default_factory=list)  # (index in the file, parsed op)
    model: dict[str, Any] | None = None  # model_name, dataset, task, estimator
    monitor: dict[str, Any] | None = None  # dataset, model_name, metric


def check_dataset(config_dir: Path, name: str) -> list[ConfigProblem]:
    """Every problem of dataset ``name``'s four files, each on its own and across them; [] when sound."""
    if not DATASET_NAME.match(name):
        return [
            ConfigProblem(str(config_dir), "name", f"dataset name {name!r} must match {DATASET_NAME.pattern}")
        ]
    paths = config_paths(config_dir, name)
    problems: list[ConfigProblem] = []
    raws: dict[str, Any] = {}
    for kind, path in paths.items():
        if not path.is_file():
            problems.append(
                ConfigProblem(
                    str(path), "", f"missing: dataset {name!r} has no {kind} file (`mesh dataset init`)"
                )
            )
            continue
        try:
            read_config(path, MODELS[kind])
        except InvalidConfig as exc:
            problems.extend(_located(p) for p in exc.problems)
        raws[kind] = _raw(path)
    return problems + _problems_across(name, paths, raws, known=problems)


def check_declaration(config_dir: Path, name: str, configs: dict[str, dict[str, Any]]) -> list[ConfigProblem]:
    """The problems ``configs`` (KINDS -> plain dict) would have once written under ``config_dir``."""
    paths = config_paths(config_dir, name)
    problems: list[ConfigProblem] = []
    for kind, path in paths.items():
        try:
            MODELS[kind].model_validate(configs[kind])
        except ValidationError as exc:
            problems.extend(_located(p) for p in problems_of(exc, str(path)))
    return problems + _problems_across(name, paths, configs, known=problems)


def require_valid_dataset(config_dir: Path, name: str) -> None:
    """Raises InvalidConfig naming every problem of dataset ``name``'s four files."""
    if problems := check_dataset(config_dir, name):
        raise InvalidConfig(problems)


def _raw(path: Path) -> dict[str, Any] | None:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


# Problems the models raise about the whole object (no field in their location), by what they start with.
_WHOLE_OBJECT_FIELDS = (
    (re.compile(r"^(gate\.floors\.[^:]+): (.*)$", re.S), None),
    (re.compile(r"^gate\.primary_metric "), "gate.primary_metric"),
    (re.compile(r"^target "), "target"),
    (re.compile(r"^dataset name "), "name"),
    (re.compile(r"^column names "), "columns"),
    (re.compile(r"^feature names "), "features"),
)


def _located(problem: ConfigProblem) -> ConfigProblem:
    """``problem`` with its field named when its model raised it about the whole object."""
    if problem.field:
        return problem
    for pattern, name in _WHOLE_OBJECT_FIELDS:
        if match := pattern.match(problem.message):
            if name is None:
                return ConfigProblem(problem.file, match.group(1), match.group(2))
            return ConfigProblem(problem.file, name, problem.message)
    return problem


def _views(raws: dict[str, Any]) -> _Views:
    views = _Views()
    if isinstance(schema := raws.get("datasets"), dict):
        views.schema_name = schema.get("name")
        views.target = schema.get("target")
        views.columns = {}
        for col in schema.get("columns") or []:
            if (
                isinstance(col, dict)
                and isinstance(col.get("name"), str)
                and isinstance(col.get("dtype"), str)
            ):
                allowed = col.get("allowed")
                views.columns[col["name"]] = _Column(
                    col["dtype"], [str(v) for v in allowed] if isinstance(allowed, list) else None
                )
    if isinstance(spec := raws.get("features"), dict):
        views.spec = {k: spec.get(k) for k in ("dataset", "target", "id_column")}
        for index, item in enumerate(spec.get("features") or []):
            try:
                views.features.append((index, FEATURE_OP_ADAPTER.validate_python(item)))
            except ValidationError:
                pass  # named by the file's own validation
    if isinstance(model := raws.get("models"), dict):
        task = model.get("task")
        task = "binary" if task == "classification" else task
        try:
            estimator: EstimatorConfig | None = EstimatorConfig.model_validate(model.get("estimator"))
        except ValidationError:
            estimator = None
        views.model = {
            "model_name": model.get("model_name"),
            "dataset": model.get("dataset"),
            "task": task if task in TASK_KINDS else None,
            "estimator": estimator,
        }
    if isinstance(monitor := raws.get("monitor"), dict):
        performance = monitor.get("performance")
        views.monitor = {
            "dataset": monitor.get("dataset"),
            "model_name": monitor.get("model_name"),
            "metric": performance.get("metric") if isinstance(performance, dict) else None,
        }
    return views


def _problems_across(
    name: str, paths: dict[str, Path], raws: dict[str, Any], known: list[ConfigProblem]
) -> list[ConfigProblem]:
    views = _views(raws)
    problems: list[ConfigProblem] = []

    def add(kind: str, where: str, message: str) -> None:
        problem = ConfigProblem(str(paths[kind]), where, message)
        # The files' own validation may have said it already (e.g. a target the schema does not declare).
        if not any(p.file == problem.file and p.field == where for p in known):
            problems.append(problem)

    schema_file = f"datasets/{name}.yaml"
    columns = views.columns
    if columns is not None:
        if views.schema_name != name:
            add("datasets", "name", f"declares dataset {views.schema_name!r}, but the file is {name!r}'s")
        if not views.target:
            add("datasets", "target", "not set: name the label column a model of this dataset learns")
        elif views.target not in columns:
            add("datasets", "target", f"target {views.target!r} is not a declared column")
    target_column = columns.get(views.target) if columns is not None and views.target else None

    if views.spec is not None:
        spec = views.spec
        if spec["dataset"] != name:
            add("features", "dataset", f"names dataset {spec['dataset']!r}, but the file is {name!r}'s")
        if columns is not None:
            if views.target and spec["target"] != views.target:
                add(
                    "features",
                    "target",
                    f"target {spec['target']!r} is not the schema's target {views.target!r} ({schema_file})",
                )
            elif not views.target and spec["target"] not in columns:
                add("features", "target", f"column {spec['target']!r} is not declared in {schema_file}")
            if spec["id_column"] is not None and spec["id_column"] not in columns:
                add("features", "id_column", f"column {spec['id_column']!r} is not declared in {schema_file}")
            for index, op in views.features:
                for where, message in _feature_problems(op, columns, views.target, schema_file):
                    add("features", f"features.{index}.{where}", message)

    if views.model is not None:
        model = views.model
        task = model["task"]
        if model["dataset"] != name:
            add("models", "dataset", f"names dataset {model['dataset']!r}, but the file is {name!r}'s")
        if task is not None and target_column is not None:
            if mismatch := _task_problem(task, str(views.target), target_column):
                add("models", "task", mismatch)
        if task is not None and model["estimator"] is not None:
            for where, message in estimator_problems(model["estimator"], task):
                add("models", where, message)

    if views.monitor is not None:
        monitor = views.monitor
        if monitor["dataset"] != name:
            add("monitor", "dataset", f"names dataset {monitor['dataset']!r}, but the file is {name!r}'s")
        if views.model is not None and monitor["model_name"] != views.model["model_name"]:
            add(
                "monitor",
                "model_name",
                f"monitors model {monitor['model_name']!r}, but models/{name}.yaml names its model "
                f"{views.model['model_name']!r}",
            )
        task = views.model["task"] if views.model is not None else None
        metric = monitor["metric"]
        if metric is not None and task is not None and metric not in LIVE_METRICS[task]:
            add(
                "monitor",
                "performance.metric",
                f"{metric!r} is not a live metric of a {task} model (one of {', '.join(LIVE_METRICS[task])})",
            )
    return problems


def _feature_problems(
    op: Any, columns: dict[str, _Column], target: Any, schema_file: str
) -> list[tuple[str, str]]:
    """(field, message) of one feature against the schema's columns."""
    problems: list[tuple[str, str]] = []
    if isinstance(op, Ratio):
        sources = {"numerator": op.numerator, "denominator": op.denominator}
    elif isinstance(op, GroupRatio):
        sources = {"source": op.source, "by": op.by}
    else:
        sources = {"source": op.source}
    for where, column in sources.items():
        if column not in columns:
            problems.append((where, f"column {column!r} is not declared in {schema_file}"))
            continue
        if column == target:
            problems.append(
                (where, f"column {column!r} is the target: a model must not learn from its label")
            )
            continue
        dtype = columns[column].dtype
        need: tuple[str, ...] = ()
        if isinstance(op, Numeric):
            need = ("int", "float", "bool")  # polars casts a bool to 0.0/1.0
        elif isinstance(op, Log1p | Ratio) or (isinstance(op, GroupRatio) and where == "source"):
            need = NUMERIC_DTYPES
        elif isinstance(op, Ordinal):
            need = ("category", "str")
        elif isinstance(op, DatetimePart):
            need = ("datetime",)
        if need and dtype not in need:
            problems.append(
                (where, f"{op.op} needs a column of type {' or '.join(need)}; column {column!r} is {dtype}")
            )
        elif isinstance(op, OneHot) and not (dtype in ("category", "str") and columns[column].allowed):
            problems.append(
                (
                    where,
                    f"one_hot needs a category column (or a str column with allowed values); "
                    f"column {column!r} is {dtype}" + ("" if dtype != "str" else " without allowed values"),
                )
            )
        elif isinstance(op, Ordinal) and columns[column].allowed:
            unknown = [v for v in op.order if v not in (columns[column].allowed or [])]
            if unknown:
                problems.append(
                    ("order", f"{unknown} are not allowed values of column {column!r} in {schema_file}")
                )
    return problems


def _task_problem(task: str, target: str, column: _Column) -> str | None:
    """Why a ``task`` model cannot learn ``target`` of this type, or None."""
    if task == "regression":
        if column.dtype not in NUMERIC_DTYPES:
            return f"a regression model needs a number to predict; target column {target!r} is {column.dtype}"
        return None
    if column.dtype not in ("int", "str", "category", "bool"):
        return (
            f"a {task} model needs class labels (int, str, category or bool); "
            f"target column {target!r} is {column.dtype}"
        )
    classes = 2 if column.dtype == "bool" else len(column.allowed) if column.allowed else None
    if classes is not None:
        if task == "binary" and classes != 2:
            return f"a binary model needs exactly 2 classes; target column {target!r} allows {classes}"
        if task == "multiclass" and classes < 3:
            return (
                f"a multiclass model needs 3 or more classes; target column {target!r} allows {classes} "
                "(use binary)"
            )
    return None


# --- reading a sample ---------------------------------------------------------------------------------


def read_sample(path: Path, rows: int = 100_000) -> pl.DataFrame:
    """The first ``rows`` rows of a CSV/TSV, Parquet or JSON-lines file (told apart by suffix)."""
    fmt = SAMPLE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DeclarationError(
            f"{path}: cannot tell its format from the suffix {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(SAMPLE_FORMATS)}"
        )
    if not path.is_file():
        raise DeclarationError(f"{path}: no such file")
    if path.stat().st_size == 0 or (fmt != "parquet" and _blank(path)):
        raise DeclarationError(f"{path} is empty")
    try:
        if fmt in ("csv", "tsv"):
            frame = pl.read_csv(
                path,
                separator="\t" if fmt == "tsv" else ",",
                n_rows=rows,
                infer_schema_length=None,
                try_parse_dates=True,
            )
        elif fmt == "parquet":
            frame = pl.read_parquet(path, n_rows=rows)
        else:
            frame = pl.read_ndjson(path, n_rows=rows, infer_schema_length=None)
    except Exception as exc:  # polars raises several error types for malformed input
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeclarationError(f"{path} is not valid {fmt}: {first_line}") from None
    if frame.height == 0 or frame.width == 0:
        raise DeclarationError(f"{path} has no rows")
    return frame


def _blank(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(4096)
    return not head.strip() and path.stat().st_size <= len(head)


# --- inferring a declaration --------------------------------------------------------------------------


def infer_declaration(
    frame: pl.DataFrame, name: str, target: str, task: str | None = None, id_column: str | None = None
) -> dict[str, dict[str, Any]]:
    """The four files (KINDS -> plain dict) declaring dataset ``name`` as ``frame`` (a sample) suggests.

    Raises DeclarationError (a ValueError) naming the column when the sample cannot be declared as asked.
    """
    if not DATASET_NAME.match(name):
        raise DeclarationError(f"dataset name {name!r} must match {DATASET_NAME.pattern}")
    if frame.height == 0:
        raise DeclarationError("the sample has no rows")
    named = without_unnamed_columns(frame)
    unnamed = frame.width - named.width
    frame = named
    if target not in frame.columns:
        raise DeclarationError(
            f"target column {target!r} is not in the file (its columns: {_listed(frame.columns)})"
        )
    if id_column is not None:
        if id_column not in frame.columns:
            raise DeclarationError(
                f"id column {id_column!r} is not in the file (its columns: {_listed(frame.columns)})"
            )
        if id_column == target:
            raise DeclarationError(f"column {target!r} cannot be both the target and the id column")
    if task is not None and task not in TASK_KINDS:
        raise DeclarationError(f"task {task!r} is not one of {', '.join(TASK_KINDS)}")

    null_values = _null_markers(frame, keep_text=id_column)
    frame = _normalised(frame, keep_text=id_column, null_values=null_values)
    labels = frame[target]
    chosen = _task_of(labels, target, task)

    columns: list[dict[str, Any]] = []
    features: list[dict[str, Any]] = []
    left_out: list[str] = []
    used_names = set(frame.columns)
    for column in frame.columns:
        series = frame[column]
        if column == target:
            columns.append(_target_column(series, chosen))
            continue
        row_numbers = column != id_column and _row_numbers(series)
        spec = _column_spec(series, is_id=column == id_column or row_numbers)
        columns.append(spec)
        if column == id_column:
            continue
        ops: list[dict[str, Any]]
        why_not: str | None
        if row_numbers:
            span = f"{series.min()!s}..{series.max()!s}"
            ops, why_not = [], f"holds {span}, each once: a row number or a counter id, not a feature"
        else:
            ops, why_not = _features_of(series, spec, used_names)
        features.extend(ops)
        if why_not:
            left_out.append(column)
            spec["description"] = why_not
    if not features:
        raise DeclarationError(
            "no column of the sample can be a feature (each is the target, the id column, free text, a time "
            f"or empty): {_listed(frame.columns)}"
        )

    description = f"Inferred by `mesh dataset init` from a sample of {frame.height} rows: review before use."
    if left_out:
        description += f" Not features (see their descriptions): {', '.join(left_out)}."
    if unnamed:
        description += " The file's unnamed column (row numbers, as R and pandas write them) is not data."
    schema = {
        "name": name,
        "description": description,
        "target": target,
        "allow_extra_columns": False,
        **({"null_values": null_values} if null_values else {}),
        "columns": columns,
    }
    spec_config: dict[str, Any] = {"dataset": name, "target": target}
    if id_column is not None:
        spec_config["id_column"] = id_column
    spec_config |= {
        "window": {"last_snapshots": 5},
        "split": {"holdout_fraction": 0.25, "seed": 7},
        "features": features,
    }
    return {
        "datasets": schema,
        "features": spec_config,
        "models": _model_config(name, chosen, labels),
        "monitor": _monitor_config(name, chosen, labels, frame.height),
    }


def _listed(names: list[str], at_most: int = 30) -> str:
    shown = ", ".join(names[:at_most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > at_most else "")


def _examples(values: pl.Series) -> str:
    return ", ".join(repr(v) for v in values.unique(maintain_order=True).head(EXAMPLES_SHOWN).to_list())


def _null_markers(frame: pl.DataFrame, keep_text: str | None) -> list[str]:
    """The known null markers (NA, N/A, ?...) that text columns otherwise holding only numbers use for
    "no value": unambiguous there, so declared as the dataset's ``null_values`` and read as missing in
    every column, as ingest will."""
    found: set[str] = set()
    for column in frame.columns:
        if column == keep_text or frame[column].dtype != pl.String:
            continue
        present = frame[column].str.strip_chars().replace("", None).drop_nulls()
        others = present.filter(present.cast(pl.Float64, strict=False).is_null()).unique()
        if others.len() < present.len() and others.is_in(KNOWN_NULL_MARKERS).all():
            found.update(others.to_list())
    return sorted(found)


def _normalised(frame: pl.DataFrame, keep_text: str | None, null_values: list[str]) -> pl.DataFrame:
    """Text columns as ingest reads them (an empty value or a null marker is missing); one holding only
    numbers as numbers.

    A text column mostly of numbers with a few other values is ambiguous: DeclarationError names it."""
    replaced: list[pl.Series] = []
    for column in frame.columns:
        series = frame[column]
        if series.dtype in (pl.Categorical, pl.Enum):
            series = series.cast(pl.String)
        if series.dtype != pl.String:
            replaced.append(series)
            continue
        series = as_missing(series.str.strip_chars(), null_values)
        present = series.drop_nulls()
        numbers = present.cast(pl.Float64, strict=False)
        parsed = present.len() - numbers.null_count()
        if column == keep_text:
            pass  # an id is text even when it looks like a number
        elif present.len() and parsed == present.len():
            integral = bool((numbers == numbers.round(0)).all()) and not present.str.contains(r"[.eE]").any()
            series = series.cast(pl.Float64, strict=False)
            series = series.cast(pl.Int64) if integral else series
        elif present.len() and parsed / present.len() > MOSTLY_NUMERIC:
            bad = present.filter(numbers.is_null())
            count = (
                "1 value that is not a number"
                if bad.len() == 1
                else f"{bad.len()} values that are not numbers"
            )
            raise DeclarationError(
                f"column {column!r} is mostly numeric but has {count}, e.g. {_examples(bad)}; "
                "clean it or cast it"
            )
        elif present.len() and (times := _times(series)) is not None:
            series = times
        replaced.append(series.alias(column))
    return pl.DataFrame(replaced)


def _times(series: pl.Series) -> pl.Series | None:
    """``series`` (text) as datetimes, if every value reads as one as ingest reads it; else None."""
    try:
        parsed = series.str.to_datetime(strict=False, time_unit="us")
    except Exception:  # polars finds no format the values share
        return None
    return parsed if parsed.null_count() == series.null_count() else None


def _task_of(labels: pl.Series, target: str, task: str | None) -> str:
    if labels.null_count():
        raise DeclarationError(
            f"target column {target!r} has {labels.null_count()} missing value(s) in the sample: every row "
            "a model learns from needs its label (drop those rows first)"
        )
    if labels.dtype.is_float():
        labels = labels.fill_nan(None).drop_nulls()
    distinct = labels.n_unique()
    if distinct < 2:
        value = labels[0] if labels.len() else None
        raise DeclarationError(
            f"target column {target!r} has one value ({value!r}) in the sample: there is nothing to learn"
        )
    chosen = task or infer_task(labels)
    if chosen == "regression":
        if not labels.dtype.is_numeric():
            raise DeclarationError(
                f"target column {target!r} is {_type_name(labels)} (e.g. {_examples(labels)}); "
                "a regression task needs numbers (use binary or multiclass for class labels)"
            )
        return chosen
    if labels.dtype.is_float() and bool((labels != labels.round(0)).any()):
        raise DeclarationError(
            f"target column {target!r} has fractional values (e.g. {_examples(labels)}); a {chosen} task "
            "needs class labels: integers, strings or booleans (use regression to predict a number)"
        )
    if chosen == "binary" and distinct > 2:
        raise DeclarationError(
            f"target column {target!r} has {distinct} classes (e.g. {_examples(labels)}); a binary task has "
            "two (use multiclass)"
        )
    if chosen == "multiclass" and distinct > MAX_CLASSES:
        raise DeclarationError(
            f"target column {target!r} has {distinct} distinct labels (e.g. {_examples(labels)}): more than "
            f"{MAX_CLASSES} classes looks like an id or free text, not a class (use regression for numbers)"
        )
    if chosen == "multiclass" and distinct < 3:
        raise DeclarationError(
            f"target column {target!r} has {distinct} classes; a multiclass task has three or more "
            "(use binary)"
        )
    return chosen


def _type_name(series: pl.Series) -> str:
    return "text" if series.dtype == pl.String else str(series.dtype)


def _dtype(series: pl.Series) -> str:
    dtype = series.dtype
    if dtype == pl.Boolean:
        return "bool"
    if dtype.is_integer():
        return "int"
    if dtype.is_float() or dtype.is_decimal():
        return "float"
    if dtype in (pl.Date, pl.Datetime) or isinstance(dtype, pl.Datetime):
        return "datetime"
    if dtype in (pl.String, pl.Null):
        return "str"
    raise DeclarationError(
        f"column {series.name!r} holds {dtype} values, which a dataset schema cannot declare "
        "(int, float, bool, str, category or datetime): flatten or convert it"
    )


def _column_spec(series: pl.Series, is_id: bool = False) -> dict[str, Any]:
    """A schema column from the sample: type, range with headroom, allowed values, missing values."""
    dtype = _dtype(series)
    spec: dict[str, Any] = {"name": series.name, "dtype": dtype}
    values = series.fill_nan(None) if series.dtype.is_float() else series
    present = values.drop_nulls()
    if dtype == "str" and not is_id and 0 < present.n_unique() <= MAX_CATEGORIES:
        if present.n_unique() < present.len() / 2:
            spec["dtype"] = "category"
            spec["allowed"] = sorted(present.cast(pl.String).unique().to_list())
    if dtype in NUMERIC_DTYPES and not is_id and present.len():
        low, high = _range(float(present.min()), float(present.max()))  # type: ignore[arg-type]
        spec["min"], spec["max"] = _tidy(low), _tidy(high)
    nulls = values.null_count()
    if nulls:
        rate = nulls / series.len()
        spec["required"] = False
        spec["max_null_rate"] = min(1.0, math.ceil((2 * rate + 0.05) * 1000) / 1000)
    return spec


def _row_numbers(series: pl.Series) -> bool:
    if not series.dtype.is_integer() or series.null_count() or series.len() < ROW_NUMBER_MIN_ROWS:
        return False
    span = int(series.max()) - int(series.min()) + 1  # type: ignore[arg-type]
    return span == series.len() and series.n_unique() == series.len()


def _range(low: float, high: float) -> tuple[float, float]:
    """[low, high] widened by its size on each side (by the value's size for a constant), never below 0
    for values that are all >= 0, rounded outwards to 3 significant digits."""
    span = high - low or max(abs(high), 1.0)
    lower = low - span
    if low >= 0:
        lower = max(0.0, lower)
    return _round_sig(lower, math.floor), _round_sig(high + span, math.ceil)


def _round_sig(value: float, towards: Any, digits: int = 3) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    decimals = digits - 1 - math.floor(math.log10(abs(value)))
    scale = 10.0**decimals
    rounded = towards(value * scale) / scale
    return round(rounded, decimals) if decimals > 0 else float(rounded)


def _tidy(value: float) -> float | int:
    """An integral number as an int: ``max: 60`` in the file, not ``max: 60.0``."""
    return int(value) if math.isfinite(value) and value == int(value) else value


def _target_column(labels: pl.Series, task: str) -> dict[str, Any]:
    name = labels.name
    if task == "regression":
        spec = _column_spec(labels.cast(pl.Float64))
        return {**spec, "dtype": "float", "description": "the target: the value a model predicts"}
    description = "the target: the class a model predicts"
    if labels.dtype == pl.Boolean:
        return {"name": name, "dtype": "bool", "description": description}
    if labels.dtype.is_numeric():
        classes = labels.cast(pl.Int64)
        return {
            "name": name,
            "dtype": "int",
            "min": int(classes.min()),  # type: ignore[arg-type]
            "max": int(classes.max()),  # type: ignore[arg-type]
            "description": description,
        }
    allowed = sorted(labels.cast(pl.String).unique().to_list())
    return {"name": name, "dtype": "category", "allowed": allowed, "description": description}


def _features_of(
    series: pl.Series, spec: dict[str, Any], used_names: set[str]
) -> tuple[list[dict[str, Any]], str | None]:
    """The feature ops of one input column, or why it is left out."""
    column, dtype = str(series.name), spec["dtype"]
    if dtype in ("int", "float", "bool"):
        if not spec.get("required", True):
            present = (series.fill_nan(None) if series.dtype.is_float() else series).drop_nulls()
            if dtype == "bool" or not present.len():
                fill = 0.0
            else:
                fill = _round_sig(float(present.cast(pl.Float64).median()), round)  # type: ignore[arg-type]
            missing = _unused(f"{column}_missing", used_names)
            return [
                {"name": column, "op": "numeric", "source": column, "fill": _tidy(fill)},
                {"name": missing, "op": "is_null", "source": column},
            ], None
        return [{"name": column, "op": "numeric", "source": column}], None
    if dtype == "category":
        return [{"name": column, "op": "one_hot", "source": column}], None
    if dtype == "datetime":
        return _time_parts(series, spec, used_names)
    present = series.drop_nulls()
    if not present.len():
        return [], "always missing in the sample: not a feature"
    return [], f"free text ({present.n_unique()} distinct values in {present.len()} rows): not a feature"


# The parts of a time proposed as features, each where the sample's values differ in it. Not the year:
# later data lies outside every year a model learnt from.
PROPOSED_TIME_PARTS: tuple[TimePart, ...] = ("month", "weekday", "hour")


def _time_parts(
    series: pl.Series, spec: dict[str, Any], used_names: set[str]
) -> tuple[list[dict[str, Any]], str | None]:
    """The datetime_part features of a time column: its month, weekday and hour (in UTC, where the mesh
    holds times; a time written without a zone is taken as UTC, so that is its own clock) where they vary."""
    column = str(series.name)
    times = as_datetimes(series).drop_nulls()
    varying = [p for p in PROPOSED_TIME_PARTS if time_part(times, p).n_unique() > 1]
    if not varying:
        return (
            [],
            "a time whose month, weekday and hour are the same in every row of the sample: not a feature",
        )
    fill = {} if spec.get("required", True) else {"fill": -1}  # a missing time: a part no time has
    return [
        {
            "name": _unused(f"{column}_{part}", used_names),
            "op": "datetime_part",
            "source": column,
            "part": part,
        }
        | fill
        for part in varying
    ], None


def _unused(name: str, used: set[str]) -> str:
    candidate, n = name, 2
    while candidate in used:
        candidate, n = f"{name}_{n}", n + 1
    used.add(candidate)
    return candidate


def _model_config(name: str, task: str, labels: pl.Series) -> dict[str, Any]:
    if task == "binary":
        floors = {"roc_auc": 0.6}  # better than a coin
    elif task == "multiclass":
        floors = {"accuracy": math.floor((1 / labels.n_unique() + 0.1) * 100) / 100}  # above chance
    else:
        floors = {"r2": 0.0}  # better than predicting the mean
    return {
        "model_name": name,
        "dataset": name,
        "task": task,
        "seed": 42,
        "estimator": {"kind": "hist_gradient_boosting" if labels.len() >= FEW_ROWS else "random_forest"},
        "gate": {
            "primary_metric": DEFAULT_PRIMARY_METRIC[task],
            "margin": 0.0,
            "floors": floors,
            "latency_budget_ms": 50,
        },
    }


def _max_drop(metric: str, labels: pl.Series) -> dict[str, float]:
    """How much worse the live metric may get before it fires / clears, in the metric's units."""
    if metric in ("rmse", "mae"):
        spread = float(labels.cast(pl.Float64).std() or 0.0)  # type: ignore[arg-type]
        if spread > 0:
            return {"fire": _round_sig(0.25 * spread, round), "clear": _round_sig(0.10 * spread, round)}
        return {"fire": 1.0, "clear": 0.4}
    if metric == "r2":
        return {"fire": 0.2, "clear": 0.08}
    return {"fire": 0.10, "clear": 0.04}  # accuracy, f1, macro_f1


def _monitor_config(name: str, task: str, labels: pl.Series, rows: int) -> dict[str, Any]:
    size = min(500, max(100, rows // 2))
    metric = DEFAULT_LIVE_METRIC[task]
    return {
        "dataset": name,
        "model_name": name,
        "window": {"size": size, "min_size": max(1, round(size * 0.4)), "max_seconds": 120},
        "drift": {
            "psi": {"fire": 0.3, "clear": 0.15},
            "ks": {"fire": 0.2, "clear": 0.1},
            "significance": {"fire": 6, "clear": 2},  # p <= 1e-6: small shifts in large windows
            "min_features": 1,
        },
        "performance": {
            "metric": metric,
            "max_drop": _max_drop(metric, labels),
            "min_labels": min(size, 200),
        },
        "retrain": {"cooldown_s": 300, "max_per_hour": 3, "min_labelled_rows": 200, "window_snapshots": 1},
        "join_capacity": 20_000,
    }


def summary(configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What a declaration says, for a person or a script: task, target, and each column's type and role."""
    schema, spec = configs["datasets"], configs["features"]
    ops: dict[str, list[str]] = {}
    for op in spec["features"]:
        for attr in ("source", "numerator", "denominator", "by"):
            if attr in op:
                ops.setdefault(op[attr], []).append(op["op"])
    columns = []
    for col in schema["columns"]:
        if col["name"] == schema["target"]:
            role = "target"
        elif col["name"] == spec.get("id_column"):
            role = "id"
        elif col["name"] in ops:
            role = "feature: " + " + ".join(ops[col["name"]])
        else:
            role = "not a feature"
        detail = {k: col[k] for k in ("min", "max", "allowed", "max_null_rate") if k in col}
        columns.append({"name": col["name"], "dtype": col["dtype"], "role": role, **detail})
    return {
        "dataset": schema["name"],
        "task": configs["models"]["task"],
        "target": schema["target"],
        "null_values": schema.get("null_values", []),
        "columns": columns,
    }


# --- writing ------------------------------------------------------------------------------------------

_HEADERS = {
    "datasets": "The schema every batch of dataset {name} is validated against",
    "features": "The features of dataset {name}: polars expressions built by shared/ml/features.py",
    "models": "The model trained on dataset {name}, and the registry gate it must pass to serve",
    "monitor": "The drift monitor of dataset {name}'s model (services/monitor/policy.py reads this)",
}


def write_declaration(
    config_dir: Path, name: str, configs: dict[str, dict[str, Any]], force: bool = False
) -> list[Path]:
    """Writes the four files of dataset ``name``; returns their paths.

    Nothing is written when any file exists (unless ``force``: then they are replaced) or when the
    declaration has problems (InvalidConfig names them)."""
    if not DATASET_NAME.match(name):
        raise DeclarationError(f"dataset name {name!r} must match {DATASET_NAME.pattern}")
    paths = config_paths(config_dir, name)
    if not force:
        existing = [str(p) for p in paths.values() if p.exists()]
        if existing:
            raise FileExistsError(
                f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
                "give --force to overwrite"
            )
    if problems := check_declaration(config_dir, name, configs):
        raise InvalidConfig(problems)
    for kind, path in paths.items():
        header = "# " + _HEADERS[kind].format(name=name) + ".\n"
        header += "# Inferred from a sample by `mesh dataset init`: review it, then `mesh dataset check`.\n"
        text = yaml.safe_dump(
            configs[kind], sort_keys=False, allow_unicode=True, default_flow_style=None, width=110
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + text, encoding="utf-8")
    return list(paths.values())
