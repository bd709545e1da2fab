"""Declaring a dataset (shared/ml/declaration.py): inferring the four files from a sample, and checking
them together. Samples are scikit-learn's bundled datasets written to CSV, and small frames made here."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from sklearn import datasets as sk

from services.ingest.batches import read_batch, validate_batch
from shared.ml.config_files import ConfigProblem, InvalidConfig
from shared.ml.datasets import load_schema
from shared.ml.declaration import (
    DeclarationError,
    check_dataset,
    infer_declaration,
    read_sample,
    require_valid_dataset,
    write_declaration,
)
from shared.ml.features import FeaturePipeline, load_feature_spec
from shared.ml.modeling import load_model_config, make_estimator
from shared.ml.monitoring import load_monitor_config
from shared.runtime.settings import REPO_ROOT


def wine() -> Any:
    frame = sk.load_wine(as_frame=True).frame
    frame["target"] = frame["target"].map(lambda i: f"class_{i}")  # string labels: the class names
    return frame


def diabetes() -> Any:
    return sk.load_diabetes(as_frame=True).frame


def breast_cancer() -> Any:
    return sk.load_breast_cancer(as_frame=True).frame


@pytest.mark.parametrize(
    ("load", "task"),
    [(wine, "multiclass"), (diabetes, "regression"), (breast_cancer, "binary")],
    ids=["wine", "diabetes", "breast_cancer"],
)
def test_a_bundled_dataset_is_declared_checked_and_loaded(
    load: Callable[[], Any], task: str, tmp_path: Path
) -> None:
    name = load.__name__.replace("_", "-")
    sample = tmp_path / f"{name}.csv"
    load().to_csv(sample, index=False)
    configs = infer_declaration(read_sample(sample), name, "target")
    assert configs["models"]["task"] == task

    config_dir = tmp_path / "config"
    written = write_declaration(config_dir, name, configs, force=False)
    assert [p.relative_to(config_dir).as_posix() for p in written] == [
        f"{kind}/{name}.yaml" for kind in ("datasets", "features", "models", "monitor")
    ]
    assert check_dataset(config_dir, name) == []
    require_valid_dataset(config_dir, name)

    schema = load_schema(config_dir, name)
    spec = load_feature_spec(config_dir, name)
    model = load_model_config(config_dir, name)
    monitor = load_monitor_config(config_dir, name)
    assert schema.target == spec.target == "target"
    assert model.task == task and model.model_name == monitor.model_name == name
    assert model.estimator.kind == "hist_gradient_boosting"
    target = schema.column("target")
    if task == "multiclass":
        assert (target.dtype, target.allowed) == ("category", ["class_0", "class_1", "class_2"])
        assert model.gate.floors == {"accuracy": 0.43}  # 1/3 + 0.1, above chance
    elif task == "regression":
        assert target.dtype == "float"
        assert model.gate.floors == {"r2": 0.0}
        assert monitor.performance.metric == "rmse"
        assert monitor.performance.max_drop.fire > monitor.performance.max_drop.clear > 0
    else:
        assert (target.dtype, target.min, target.max) == ("int", 0, 1)
        assert model.gate.floors == {"roc_auc": 0.6}
    # Every other column is a numeric feature; the sample itself passes ingest's validation.
    assert len(spec.features) == len(schema.columns) - 1
    assert {f.op for f in spec.features} == {"numeric"}
    frame, failures = validate_batch(read_batch(sample.read_bytes(), "csv", name), schema)
    assert failures == []
    matrix = FeaturePipeline(spec, schema).fit(frame).transform(frame).to_numpy()
    assert np.isfinite(matrix).all()
    assert monitor.window.min_size <= monitor.window.size <= 500
    assert monitor.performance.min_labels <= monitor.window.size


def messy(rows: int = 120) -> pl.DataFrame:
    """An id, a time, free text, nulls, a bool, a category and a text label."""
    rng = np.random.default_rng(0)
    ages = rng.integers(18, 90, rows).tolist()
    return pl.DataFrame(
        {
            "customer": [f"c{i:04d}" for i in range(rows)],
            "seen": [f"2024-01-{1 + i % 28:02d}T10:00:00" for i in range(rows)],
            "age": [None if i % 10 == 0 else a for i, a in enumerate(ages)],
            "balance": rng.normal(0, 100, rows).round(2).tolist(),
            "plan": [["basic", "plus", "premium"][i % 3] for i in range(rows)],
            "vip": [i % 2 == 0 for i in range(rows)],
            "comment": [f"said {i}" for i in range(rows)],
            "label": [["no", "yes"][i % 2] for i in range(rows)],
        }
    )


def test_a_messy_sample_gets_one_op_per_usable_column(tmp_path: Path) -> None:
    sample = tmp_path / "messy.csv"
    messy().write_csv(sample)
    configs = infer_declaration(read_sample(sample), "messy", "label", id_column="customer")
    columns = {c["name"]: c for c in configs["datasets"]["columns"]}
    assert columns["customer"] == {"name": "customer", "dtype": "str"}
    assert columns["seen"] == {"name": "seen", "dtype": "datetime"}
    assert columns["comment"]["dtype"] == "str" and "free text" in columns["comment"]["description"]
    assert columns["age"]["dtype"] == "int" and columns["age"]["required"] is False
    assert columns["age"]["max_null_rate"] == pytest.approx(0.25)  # 2 x 10% + 0.05
    assert columns["age"]["min"] == 0  # ages are >= 0: the headroom stops at 0
    assert columns["balance"]["min"] < 0 < columns["balance"]["max"]
    assert columns["plan"] == {"name": "plan", "dtype": "category", "allowed": ["basic", "plus", "premium"]}
    assert columns["vip"] == {"name": "vip", "dtype": "bool"}
    assert columns["label"]["allowed"] == ["no", "yes"]
    spec = configs["features"]
    assert spec["id_column"] == "customer"
    ops = {f["name"]: f for f in spec["features"]}
    assert ops["age"]["op"] == "numeric" and "fill" in ops["age"]
    assert ops["age_missing"] == {"name": "age_missing", "op": "is_null", "source": "age"}
    assert ops["plan"]["op"] == "one_hot" and ops["vip"]["op"] == "numeric"
    # Every time is 10:00 in January: of its parts, only the weekday tells rows apart.
    assert ops["seen_weekday"] == {
        "name": "seen_weekday",
        "op": "datetime_part",
        "source": "seen",
        "part": "weekday",
    }
    assert not {"seen", "seen_hour", "seen_month", "comment", "customer", "label"} & set(ops)
    assert configs["models"]["task"] == "binary"

    config_dir = tmp_path / "config"
    write_declaration(config_dir, "messy", configs, force=False)
    assert check_dataset(config_dir, "messy") == []
    schema, feature_spec = load_schema(config_dir, "messy"), load_feature_spec(config_dir, "messy")
    frame, failures = validate_batch(read_batch(sample.read_bytes(), "csv", "messy"), schema)
    assert failures == []
    features = FeaturePipeline(feature_spec, schema).fit(frame).transform(frame)
    assert features.null_count().sum_horizontal().item() == 0  # bools cast to 0/1, nulls filled
    make_estimator(load_model_config(config_dir, "messy")).fit(features.to_numpy(), frame["label"].to_numpy())


def test_a_time_gives_the_parts_that_vary_and_a_fill_where_it_may_be_missing(tmp_path: Path) -> None:
    rows = 60
    fridays = ["2024-01-05", "2024-02-02", "2024-03-01"]  # three months, one weekday
    seen = [None if i % 12 == 0 else f"{fridays[i % 3]}T{i % 24:02d}:00:00Z" for i in range(rows)]
    sample = tmp_path / "times.csv"
    messy(rows).with_columns(
        pl.Series("seen", seen), pl.Series("signed_up", ["2020-06-01T00:00:00"] * rows)
    ).write_csv(sample)
    configs = infer_declaration(read_sample(sample), "times", "label")
    ops = [f for f in configs["features"]["features"] if f.get("source") in ("seen", "signed_up")]
    assert ops == [
        {"name": f"seen_{part}", "op": "datetime_part", "source": "seen", "part": part, "fill": -1}
        for part in ("month", "hour")
    ]
    columns = {c["name"]: c for c in configs["datasets"]["columns"]}
    assert "the same in every row" in columns["signed_up"]["description"]


def test_json_lines_text_that_reads_as_numbers_or_times_is_typed(tmp_path: Path) -> None:
    sample = tmp_path / "messy.jsonl"
    frame = messy().with_columns(pl.col("balance").cast(pl.String))
    frame.write_ndjson(sample)
    columns = {
        c["name"]: c["dtype"]
        for c in infer_declaration(read_sample(sample), "m", "label")["datasets"]["columns"]
    }
    assert columns["balance"] == "float" and columns["seen"] == "datetime"


@pytest.mark.parametrize(
    ("low", "high"), [(6.981, 28.11), (1000.1, 1000.2), (-3.5, -1.25), (5.0, 5.0), (0.00123, 0.00456)]
)
def test_ranges_hold_what_was_seen_with_headroom(low: float, high: float) -> None:
    frame = pl.DataFrame({"x": [low, high, (low + high) / 2] * 4, "y": [0, 1, 0] * 4})
    column = infer_declaration(frame, "r", "y")["datasets"]["columns"][0]
    assert column["min"] <= low and column["max"] >= high
    assert column["max"] - high >= (high - low) * 0.99
    if low >= 0:
        assert column["min"] >= 0
    for bound in (column["min"], column["max"]):
        assert (
            bound == 0 or len(f"{abs(bound):.15g}".replace(".", "").strip("0")) <= 3
        )  # 3 significant digits


def labelled(label: list[Any], **columns: list[Any]) -> pl.DataFrame:
    return pl.DataFrame({"x": [float(i) for i in range(len(label))], **columns, "y": label})


@pytest.mark.parametrize(
    ("frame", "task", "says"),
    [
        (labelled([1] * 10), None, "target column 'y' has one value (1)"),
        (labelled(["a", "b", "c"] * 4), "regression", "target column 'y' is text (e.g. 'a', 'b', 'c')"),
        (labelled(["a", "b", "c"] * 4), "binary", "target column 'y' has 3 classes"),
        (labelled([0, 1] * 5), "multiclass", "target column 'y' has 2 classes"),
        (labelled([0.5, 1.5] * 5), "binary", "target column 'y' has fractional values"),
        (labelled([0, 1, None, 1]), None, "target column 'y' has 1 missing value(s)"),
        (
            labelled([0, 1] * 20, age=[str(i) for i in range(37)] + ["n/a", "twelve", "n/a"]),
            None,
            "column 'age' is mostly numeric but has 3 values that are not numbers, e.g. 'n/a', 'twelve'",
        ),
    ],
    ids=[
        "one class",
        "regression on text",
        "binary of 3",
        "multiclass of 2",
        "fractional",
        "nulls",
        "mostly",
    ],
)
def test_a_sample_that_cannot_be_declared_is_refused_naming_the_column(
    frame: pl.DataFrame, task: str | None, says: str
) -> None:
    with pytest.raises(DeclarationError, match="^" + re.escape(says)):
        infer_declaration(frame, "bad", "y", task)


def test_a_mostly_numeric_csv_column_is_ambiguous(tmp_path: Path) -> None:
    sample = tmp_path / "ages.csv"
    sample.write_text("age,y\n" + "".join(f"{20 + i},{i % 2}\n" for i in range(30)) + "unknown,1\n")
    with pytest.raises(
        ValueError,
        match=r"column 'age' is mostly numeric but has 1 value that is not a number, e.g. 'unknown'; clean",
    ):
        infer_declaration(read_sample(sample), "ages", "y")


def r_write_csv(path: Path, rows: int = 60) -> None:
    """A file as R's write.csv writes it: row numbers under an unnamed header, every missing value NA."""
    lines = ['"","species","bill_mm","mass_g","sex","tag"']
    for i in range(rows):
        bill = "NA" if i % 20 == 3 else f"{35 + (i % 7) * 1.5:.1f}"
        mass = "NA" if i % 20 == 3 else str(3000 + 25 * (i % 11))
        sex = "NA" if i % 10 == 5 else ("male", "female")[i % 2]
        lines.append(
            f'"{i + 1}","{("Adelie", "Gentoo", "Chinstrap")[i % 3]}",{bill},{mass},"{sex}",{1000 + i}'
        )
    path.write_text("\n".join(lines) + "\n")


def test_a_file_written_by_r_is_declared_and_ingested_as_it_is(tmp_path: Path) -> None:
    """NA is read as missing (in numbers and categories alike) because the numeric columns show it is a
    marker; the unnamed row-number column is no column; a counter column is declared but no feature."""
    sample = tmp_path / "penguins.csv"
    r_write_csv(sample)
    configs = infer_declaration(read_sample(sample), "penguins", "species")
    write_declaration(tmp_path, "penguins", configs, force=False)
    assert check_dataset(tmp_path, "penguins") == []

    schema = load_schema(tmp_path, "penguins")
    assert schema.null_values == ["NA"]
    assert schema.column_names == ["species", "bill_mm", "mass_g", "sex", "tag"]
    assert "unnamed column" in schema.description
    assert schema.column("bill_mm").dtype == "float" and schema.column("mass_g").dtype == "int"
    assert schema.column("sex").allowed == ["female", "male"]
    tag = schema.column("tag")
    assert (tag.dtype, tag.min, tag.max) == ("int", None, None)
    assert "1000..1059, each once: a row number or a counter id" in tag.description
    spec = load_feature_spec(tmp_path, "penguins")
    assert "tag" not in spec.input_columns and {"bill_mm", "mass_g", "sex"} <= set(spec.input_columns)

    # Ingest reads the same file as declared: NA is null everywhere, the row numbers are not read.
    frame, failures = validate_batch(read_batch(sample.read_bytes(), "csv", "penguins"), schema)
    assert failures == []
    assert frame.columns == schema.column_names
    assert frame["bill_mm"].null_count() == 3 and frame["sex"].null_count() == 6
    assert frame["sex"].drop_nulls().unique().sort().to_list() == ["female", "male"]
    # ... and a marker padded by the separator (", NA") is a marker too; other text is still a type error.
    padded = sample.read_text().replace(",NA,", ", NA ,").replace(",3025,", ",many,")
    frame, failures = validate_batch(read_batch(padded.encode(), "csv", "penguins"), schema)
    assert [(f.column, f.rule) for f in failures] == [("mass_g", "type")]


def test_null_markers_are_checked_against_allowed_values() -> None:
    from shared.ml.datasets import DatasetSchema

    columns = [{"name": "sex", "dtype": "category", "allowed": ["female", "male", "NA"]}]
    with pytest.raises(ValueError, match=r"column sex: allowed values \['NA'\] are also null_values"):
        DatasetSchema(name="d", columns=columns, null_values=["NA"])
    with pytest.raises(ValueError, match="null_values: a marker is blank"):
        DatasetSchema(name="d", columns=[{"name": "x", "dtype": "int"}], null_values=[" "])
    plain = DatasetSchema(name="d", columns=[{"name": "x", "dtype": "int"}])
    marked = DatasetSchema(name="d", columns=[{"name": "x", "dtype": "int"}], null_values=["NA"])
    assert plain.schema_hash != marked.schema_hash  # a new marker reads old files anew: new feature sets


def test_a_small_sample_gets_an_estimator_that_learns_from_few_rows() -> None:
    few = infer_declaration(labelled([0, 1, 1, 0] * 8), "few", "y")["models"]
    assert few["estimator"] == {"kind": "random_forest"}
    many = infer_declaration(labelled([0, 1, 1, 0] * 25), "many", "y")["models"]
    assert many["estimator"] == {"kind": "hist_gradient_boosting"}


def test_a_target_not_in_the_file_names_the_known_columns() -> None:
    with pytest.raises(
        DeclarationError, match=r"target column 'label' is not in the file \(its columns: x, y\)"
    ):
        infer_declaration(labelled([0, 1] * 3), "t", "label")
    with pytest.raises(DeclarationError, match="id column 'id' is not in the file"):
        infer_declaration(labelled([0, 1] * 3), "t", "y", id_column="id")


def test_a_bad_name_or_task_is_refused() -> None:
    with pytest.raises(DeclarationError, match="dataset name 'Bad Name' must match"):
        infer_declaration(labelled([0, 1] * 3), "Bad Name", "y")
    with pytest.raises(DeclarationError, match="task 'ranking' is not one of"):
        infer_declaration(labelled([0, 1] * 3), "ok", "y", task="ranking")


def test_only_text_columns_leave_no_feature() -> None:
    frame = pl.DataFrame({"note": [f"n{i}" for i in range(10)], "y": [0, 1] * 5})
    with pytest.raises(DeclarationError, match="no column of the sample can be a feature"):
        infer_declaration(frame, "t", "y")


@pytest.mark.parametrize(
    ("file", "content", "says"),
    [
        ("data.xlsx", b"x", "data.xlsx: cannot tell its format from the suffix '.xlsx'"),
        ("data", b"x", "data: cannot tell its format from the suffix '(none)'"),
        ("empty.csv", b"", "empty.csv is empty"),
        ("blank.jsonl", b"\n\n", "blank.jsonl is empty"),
        ("header.csv", b"a,b\n", "header.csv has no rows"),
        ("broken.parquet", b"not parquet", "broken.parquet is not valid parquet"),
        ("broken.jsonl", b"{not json\n", "broken.jsonl is not valid jsonl"),
    ],
)
def test_a_file_that_cannot_be_read_is_named(file: str, content: bytes, says: str, tmp_path: Path) -> None:
    path = tmp_path / file
    path.write_bytes(content)
    with pytest.raises(DeclarationError) as caught:
        read_sample(path)
    assert says in str(caught.value)


def test_every_format_reads(tmp_path: Path) -> None:
    frame = messy(10).select("age", "balance", "label")
    frame.write_csv(tmp_path / "s.csv")
    frame.write_csv(tmp_path / "s.tsv", separator="\t")
    frame.write_parquet(tmp_path / "s.pq")
    frame.write_ndjson(tmp_path / "s.ndjson")
    for name in ("s.csv", "s.tsv", "s.pq", "s.ndjson"):
        assert read_sample(tmp_path / name).equals(frame), name
    assert read_sample(tmp_path / "s.csv", rows=3).height == 3


def test_existing_files_are_kept_unless_forced(tmp_path: Path) -> None:
    configs = infer_declaration(messy(), "kept", "label")
    write_declaration(tmp_path, "kept", configs)
    schema_file = tmp_path / "datasets" / "kept.yaml"
    schema_file.write_text(schema_file.read_text() + "# edited by hand\n")
    with pytest.raises(FileExistsError, match=str(schema_file)):
        write_declaration(tmp_path, "kept", configs)
    assert "edited by hand" in schema_file.read_text()
    write_declaration(tmp_path, "kept", configs, force=True)
    assert "edited by hand" not in schema_file.read_text()
    with pytest.raises(DeclarationError, match="must match"):
        write_declaration(tmp_path, "Kept", configs)


def test_a_declaration_with_problems_is_not_written(tmp_path: Path) -> None:
    configs = infer_declaration(messy(), "wrong", "label")
    configs["models"]["gate"]["floors"] = {"rmse": 1.0}
    with pytest.raises(InvalidConfig, match=r"gate\.floors\.rmse"):
        write_declaration(tmp_path, "wrong", configs)
    assert not list(tmp_path.rglob("*.yaml"))


# --- checking hand-broken files ------------------------------------------------------------------------


@pytest.fixture
def declared(tmp_path: Path) -> Path:
    """A sound declaration of dataset ``shop`` (messy() with an id) under ``tmp_path``."""
    write_declaration(tmp_path, "shop", infer_declaration(messy(), "shop", "label", id_column="customer"))
    assert check_dataset(tmp_path, "shop") == []
    return tmp_path


def edit(config_dir: Path, kind: str, change: Callable[[dict[str, Any]], None]) -> Path:
    path = config_dir / kind / "shop.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def feature_index(config_dir: Path, name: str) -> int:
    features = yaml.safe_load((config_dir / "features" / "shop.yaml").read_text())["features"]
    return next(i for i, f in enumerate(features) if f["name"] == name)


def only(problems: list[ConfigProblem]) -> ConfigProblem:
    assert len(problems) == 1, problems
    return problems[0]


def test_a_feature_of_an_undeclared_column(declared: Path) -> None:
    i = feature_index(declared, "balance")
    path = edit(declared, "features", lambda d: d["features"][i].update(source="balanse"))
    problem = only(check_dataset(declared, "shop"))
    assert (problem.file, problem.field) == (str(path), f"features.{i}.source")
    assert "column 'balanse' is not declared in datasets/shop.yaml" in problem.message


def test_a_numeric_op_on_a_text_column(declared: Path) -> None:
    i = feature_index(declared, "balance")
    edit(declared, "features", lambda d: d["features"][i].update(source="comment"))
    problem = only(check_dataset(declared, "shop"))
    assert problem.field == f"features.{i}.source"
    assert problem.message == "numeric needs a column of type int or float or bool; column 'comment' is str"


def test_ops_that_do_not_fit_their_column(declared: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["features"] += [
            {"name": "log_plan", "op": "log1p", "source": "plan"},
            {"name": "comment_hot", "op": "one_hot", "source": "comment"},
            {"name": "age_rank", "op": "ordinal", "source": "age", "order": ["1"]},
            {"name": "plan_rank", "op": "ordinal", "source": "plan", "order": ["basic", "gold"]},
            {"name": "per_plan", "op": "group_ratio", "source": "balance", "by": "plan"},  # fine
            {"name": "leak", "op": "numeric", "source": "label"},
            {"name": "age_hour", "op": "datetime_part", "source": "age", "part": "hour"},
        ]

    edit(declared, "features", change)
    messages = {p.field.split(".", 2)[-1] + " " + p.message for p in check_dataset(declared, "shop")}
    assert messages == {
        "source log1p needs a column of type int or float; column 'plan' is category",
        "source one_hot needs a category column (or a str column with allowed values); column 'comment' is "
        "str without allowed values",
        "source ordinal needs a column of type category or str; column 'age' is int",
        "order ['gold'] are not allowed values of column 'plan' in datasets/shop.yaml",
        "source column 'label' is the target: a model must not learn from its label",
        "source datetime_part needs a column of type datetime; column 'age' is int",
    }


def test_a_floor_of_another_task_names_the_floor(declared: Path) -> None:
    path = edit(declared, "models", lambda d: d["gate"]["floors"].update(rmse=10.0))
    problem = only(check_dataset(declared, "shop"))
    assert (problem.file, problem.field) == (str(path), "gate.floors.rmse")
    assert problem.message.startswith("not a binary metric")


def test_a_monitor_of_another_model(declared: Path) -> None:
    path = edit(declared, "monitor", lambda d: d.update(model_name="churn-demo"))
    problem = only(check_dataset(declared, "shop"))
    assert (problem.file, problem.field) == (str(path), "model_name")
    assert "'churn-demo'" in problem.message and "'shop'" in problem.message


def test_a_target_the_schema_does_not_declare(declared: Path) -> None:
    path = edit(
        declared, "datasets", lambda d: d.update(columns=[c for c in d["columns"] if c["name"] != "label"])
    )
    problems = check_dataset(declared, "shop")
    problem = only([p for p in problems if p.file == str(path)])
    assert problem.field == "target" and "'label' is not a declared column" in problem.message
    edit(declared, "datasets", lambda d: d.pop("target"))
    problem = only([p for p in check_dataset(declared, "shop") if p.file == str(path)])
    assert problem.field == "target" and problem.message.startswith("not set")


def test_every_problem_is_named_at_once(declared: Path) -> None:
    edit(declared, "datasets", lambda d: d["columns"][2].update(dtype="integer"))  # age
    edit(declared, "features", lambda d: d.update(target="plan", id_column="nobody"))
    edit(declared, "models", lambda d: d.update(task="regression", estimator={"class": "sklearn.svm.SVC"}))
    edit(
        declared, "monitor", lambda d: d.update(dataset="other") or d["performance"].update(metric="roc_auc")
    )
    found = {(Path(p.file).parent.name, p.field) for p in check_dataset(declared, "shop")}
    assert found == {
        ("datasets", "columns.2.dtype"),
        ("features", "target"),
        ("features", "id_column"),
        ("features", f"features.{feature_index(declared, 'age')}.source"),  # numeric of an 'integer'
        ("models", "task"),  # a regression of a category target
        ("models", "gate.primary_metric"),  # roc_auc: not a regression metric
        ("models", "estimator.class"),  # SVC is no regressor
        ("monitor", "dataset"),
        ("monitor", "performance.metric"),
    }
    with pytest.raises(InvalidConfig) as caught:
        require_valid_dataset(declared, "shop")
    assert len(caught.value.problems) == len(found)


def test_a_task_its_target_cannot_be(declared: Path) -> None:
    gate = {"primary_metric": "macro_f1", "floors": {"accuracy": 0.4}}
    edit(declared, "models", lambda d: d.update(task="multiclass", gate=gate))
    problem = only(check_dataset(declared, "shop"))
    assert problem.field == "task"
    assert "needs 3 or more classes; target column 'label' allows 2" in problem.message


def test_missing_and_unreadable_files_are_named(declared: Path) -> None:
    (declared / "monitor" / "shop.yaml").unlink()
    (declared / "models" / "shop.yaml").write_text("model_name: [unclosed\n")
    problems = check_dataset(declared, "shop")
    assert [(Path(p.file).parent.name, p.field) for p in problems] == [("models", ""), ("monitor", "")]
    assert "not valid YAML" in problems[0].message and problems[1].message.startswith("missing")
    assert only(check_dataset(declared, "Nope!")).field == "name"


def test_the_shipped_datasets_are_sound() -> None:
    for name in ("demo", "cancer"):
        assert check_dataset(REPO_ROOT / "deploy" / "config", name) == [], name


def test_the_written_files_say_where_they_came_from(declared: Path) -> None:
    text = (declared / "datasets" / "shop.yaml").read_text()
    assert text.startswith("# The schema every batch of dataset shop is validated against.")
    assert "mesh dataset init" in text
    assert not math.isnan(yaml.safe_load(io.StringIO(text))["columns"][2]["max"])


def test_a_target_with_an_id_per_row_is_refused_as_a_class() -> None:
    frame = pl.DataFrame({"x": list(range(300)), "label": [f"user-{i}" for i in range(300)]})
    with pytest.raises(DeclarationError, match=r"300 distinct labels .* looks like an id or free text"):
        infer_declaration(frame, "ids", "label")
