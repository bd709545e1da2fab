"""Expectations on the demo data: the synthetic churn data and the behaviour of its shift and noise knobs,
and the breast-cancer batches of the ``cancer`` dataset against what that dataset declares."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from services.ingest.batches import read_batch, validate_batch
from shared.ml.datasets import DatasetSchema, load_schema
from shared.ml.features import load_feature_spec
from shared.ml.modeling import load_model_config
from shared.ml.monitoring import load_monitor_config
from shared.ops.cli import app
from shared.ops.demo_data import CANCER_ROWS, cancer, cancer_feature_columns, cancer_record, generate
from shared.runtime.settings import REPO_ROOT

ROWS = 2_000
NUMERIC = ["age", "income", "tenure_months", "monthly_spend", "support_calls", "last_login_days"]


@pytest.fixture(scope="module")
def schema() -> DatasetSchema:
    return load_schema(REPO_ROOT / "deploy" / "config", "demo")


@pytest.fixture(scope="module")
def reference() -> pl.DataFrame:
    return generate(rows=ROWS, seed=1)


@pytest.fixture(scope="module")
def holdout() -> pl.DataFrame:
    return generate(rows=ROWS, seed=2)


@pytest.fixture(scope="module")
def model(reference: pl.DataFrame, schema: DatasetSchema) -> Pipeline:
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1_000))
    return clf.fit(features(reference, schema), labels(reference))


def features(frame: pl.DataFrame, schema: DatasetSchema) -> np.ndarray:
    """Numerics (missing logins as 0 plus an indicator) and one-hot categories in the declared order."""
    numeric = frame.select(
        *[pl.col(c).fill_null(0.0).cast(pl.Float64) for c in NUMERIC],
        pl.col("last_login_days").is_null().cast(pl.Float64).alias("never_logged_in"),
    )
    one_hot = frame.select(
        [
            (pl.col(col.name) == value).cast(pl.Float64).alias(f"{col.name}={value}")
            for col in schema.columns
            if col.dtype == "category"
            for value in col.allowed or []
        ]
    )
    return pl.concat([numeric, one_hot], how="horizontal").to_numpy()


def labels(frame: pl.DataFrame) -> np.ndarray:
    return frame["churned"].to_numpy()


def mean(series: pl.Series) -> float:
    return float(series.cast(pl.Float64).to_numpy().mean())


def share(series: pl.Series, value: str) -> float:
    return mean(series == value)


def auc(model: Pipeline, frame: pl.DataFrame, schema: DatasetSchema) -> float:
    return float(roc_auc_score(labels(frame), model.predict_proba(features(frame, schema))[:, 1]))


def assert_matches_schema(frame: pl.DataFrame, schema: DatasetSchema) -> None:
    assert dict(frame.schema) == schema.polars_schema
    assert frame.columns == schema.column_names
    for col in schema.columns:
        series = frame[col.name]
        null_rate = series.null_count() / len(series)
        if col.required:
            assert null_rate == 0, col.name
        assert null_rate <= col.max_null_rate, col.name
        values = series.drop_nulls()
        if col.min is not None:
            assert values.cast(pl.Float64).to_numpy().min() >= col.min, col.name
        if col.max is not None:
            assert values.cast(pl.Float64).to_numpy().max() <= col.max, col.name
        if col.allowed is not None:
            assert set(values.unique().to_list()) <= set(col.allowed), col.name


def test_same_seed_same_frame() -> None:
    assert generate(rows=500, seed=7).equals(generate(rows=500, seed=7))
    assert generate(rows=500, seed=7, covariate_shift=0.5, concept_shift=0.5, label_noise=0.3).equals(
        generate(rows=500, seed=7, covariate_shift=0.5, concept_shift=0.5, label_noise=0.3)
    )


def test_different_seed_different_frame() -> None:
    a, b = generate(rows=500, seed=7), generate(rows=500, seed=8)
    assert not a.equals(b)
    assert set(a["customer_id"]).isdisjoint(b["customer_id"])


def test_reference_matches_declared_schema(reference: pl.DataFrame, schema: DatasetSchema) -> None:
    assert reference.height == ROWS
    assert_matches_schema(reference, schema)
    assert reference["customer_id"].n_unique() == ROWS


def test_reference_expectations(reference: pl.DataFrame) -> None:
    assert 0.02 <= reference["last_login_days"].null_count() / ROWS <= 0.08
    assert 0.20 <= mean(reference["churned"]) <= 0.35
    # Every category shows up, so a one-hot encoder fitted on reference data sees all of them.
    assert reference["region"].n_unique() == 4
    assert reference["plan"].n_unique() == 3


def test_event_time_starts_at_start_and_increases() -> None:
    start = datetime(2026, 3, 1, 12, tzinfo=UTC)
    times = generate(rows=100, seed=3, start=start)["event_time"]
    assert times[0] == start
    gaps = times.diff().drop_nulls().to_list()
    assert min(gaps) >= timedelta(minutes=1)
    assert max(gaps) <= timedelta(minutes=5)


def test_reference_is_learnable(model: Pipeline, holdout: pl.DataFrame, schema: DatasetSchema) -> None:
    assert auc(model, holdout, schema) > 0.75


def test_covariate_shift_moves_inputs_within_schema(reference: pl.DataFrame, schema: DatasetSchema) -> None:
    shifted = generate(rows=ROWS, seed=1, covariate_shift=1.0)
    assert_matches_schema(shifted, schema)
    assert mean(shifted["age"]) - mean(reference["age"]) > 5
    assert mean(shifted["income"]) < 0.8 * mean(reference["income"])
    assert mean(shifted["support_calls"]) > 1.5 * mean(reference["support_calls"])
    assert share(shifted["region"], "south") - share(reference["region"], "south") > 0.15
    assert share(shifted["plan"], "basic") - share(reference["plan"], "basic") > 0.15
    assert shifted["last_login_days"].null_count() > reference["last_login_days"].null_count()


def test_extreme_covariate_shift_still_valid(schema: DatasetSchema) -> None:
    assert_matches_schema(generate(rows=ROWS, seed=4, covariate_shift=5.0), schema)


def test_concept_shift_breaks_the_reference_model(
    model: Pipeline, holdout: pl.DataFrame, schema: DatasetSchema
) -> None:
    drifted = generate(rows=ROWS, seed=2, concept_shift=1.0)
    assert_matches_schema(drifted, schema)
    assert auc(model, holdout, schema) - auc(model, drifted, schema) > 0.1
    # Only the label rule moved: the inputs are those of the reference batch with the same seed.
    assert drifted.drop("churned").equals(holdout.drop("churned"))
    assert abs(mean(drifted["age"]) - mean(holdout["age"])) < 1
    # The churn rate hardly moves either, so only label-aware monitoring can notice this kind of drift.
    assert abs(mean(drifted["churned"]) - mean(holdout["churned"])) < 0.1


def test_concept_shifted_data_is_learnable_again(schema: DatasetSchema) -> None:
    train = generate(rows=ROWS, seed=5, concept_shift=1.0)
    test = generate(rows=ROWS, seed=6, concept_shift=1.0)
    retrained = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1_000))
    retrained.fit(features(train, schema), labels(train))
    assert auc(retrained, test, schema) > 0.7


def test_full_label_noise_leaves_no_signal(
    model: Pipeline, holdout: pl.DataFrame, schema: DatasetSchema
) -> None:
    poisoned = generate(rows=ROWS, seed=2, label_noise=1.0)
    assert 0.4 < auc(model, poisoned, schema) < 0.6
    # Shuffled, not flipped: the churn rate and the inputs are unchanged.
    assert poisoned["churned"].sum() == holdout["churned"].sum()
    assert poisoned.drop("churned").equals(holdout.drop("churned"))


def test_partial_label_noise_weakens_signal(
    model: Pipeline, holdout: pl.DataFrame, schema: DatasetSchema
) -> None:
    noisy = generate(rows=ROWS, seed=2, label_noise=0.5)
    assert 0.5 < auc(model, noisy, schema) < auc(model, holdout, schema)


@pytest.mark.parametrize(
    "kwargs",
    [{"rows": -1}, {"covariate_shift": -0.1}, {"concept_shift": 1.5}, {"label_noise": -0.1}, {"seed": -1}],
)
def test_rejects_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        generate(**{"rows": 10, **kwargs})  # type: ignore[arg-type]


# --- the cancer dataset (real data: scikit-learn's breast-cancer set) ----------------------------------

CONFIG_DIR = REPO_ROOT / "deploy" / "config"


@pytest.fixture(scope="module")
def cancer_schema() -> DatasetSchema:
    return load_schema(CONFIG_DIR, "cancer")


def ingested(batch: pl.DataFrame, schema: DatasetSchema) -> pl.DataFrame:
    """``batch`` uploaded as CSV and validated as ingest validates it; fails on any rule it breaks."""
    frame, failures = validate_batch(read_batch(batch.write_csv().encode(), "csv", schema.name), schema)
    assert failures == [], failures
    return frame


def test_the_cancer_configs_load_and_agree(cancer_schema: DatasetSchema) -> None:
    spec = load_feature_spec(CONFIG_DIR, "cancer")  # also checks the spec against the schema
    model = load_model_config(CONFIG_DIR, "cancer")
    monitor = load_monitor_config(CONFIG_DIR, "cancer")
    assert (model.model_name, model.dataset) == ("cancer-demo", "cancer")
    assert monitor.model_name == model.model_name and spec.dataset == "cancer"
    assert spec.target == cancer_schema.target == "malignant" and spec.id_column == "sample_id"
    assert sorted(spec.input_columns) == sorted(cancer_feature_columns())  # every measurement is an input
    assert cancer_schema.column("malignant").dtype == "int"
    assert not cancer_schema.column("event_time").required
    # Every model the mesh serves has a name of its own.
    assert model.model_name != load_model_config(CONFIG_DIR, "demo").model_name


def test_the_whole_cancer_dataset_passes_ingest_validation(cancer_schema: DatasetSchema) -> None:
    batch = cancer()
    assert_matches_schema(batch, cancer_schema)
    assert batch.height == CANCER_ROWS and batch["sample_id"].n_unique() == CANCER_ROWS
    assert batch["malignant"].sum() == 212  # 212 malignant, 357 benign, as scikit-learn bundles it
    assert ingested(batch, cancer_schema).equals(batch)  # the CSV round trip loses nothing


@pytest.mark.parametrize(
    "knobs",
    [
        {"event_time": False},
        {"rows": 200, "seed": 4},
        {"covariate_shift": 2.0},
        {"rows": 100, "seed": 5, "label_noise": 1.0},
    ],
)
def test_every_cancer_batch_passes_ingest_validation(
    cancer_schema: DatasetSchema, knobs: dict[str, Any]
) -> None:
    batch = cancer(**knobs)
    frame = ingested(batch, cancer_schema)
    assert frame.select(batch.columns).equals(batch)


def test_a_cancer_sample_is_seeded_and_keeps_each_rows_id() -> None:
    whole = cancer()
    sample = cancer(rows=150, seed=7)
    assert sample.equals(cancer(rows=150, seed=7)) and not sample.equals(cancer(rows=150, seed=8))
    assert sample["sample_id"].n_unique() == 150
    joined = sample.drop("event_time").join(whole.drop("event_time"), on="sample_id", suffix="_whole")
    assert joined.height == 150
    for column in [*cancer_feature_columns(), "malignant"]:
        assert joined[column].equals(joined[f"{column}_whole"], check_names=False), column


def test_cancer_record_is_a_request_of_one_sample() -> None:
    record = cancer_record(0)
    assert list(record) == cancer_feature_columns()
    assert record == cancer().drop("sample_id", "event_time", "malignant").row(0, named=True)


def test_cancer_covariate_shift_scales_the_size_measurements_only() -> None:
    reference, shifted = cancer(), cancer(covariate_shift=1.0)
    for column in cancer_feature_columns():
        ratio = float((shifted[column] / reference[column]).drop_nans().mean())
        measure = column.removeprefix("mean_").removeprefix("worst_").removesuffix("_error")
        expected = {"radius": 1.2, "perimeter": 1.2, "area": 1.44}.get(measure, 1.0)
        assert ratio == pytest.approx(expected, abs=1e-6), column
    assert shifted["malignant"].equals(reference["malignant"])


def test_cancer_label_noise_shuffles_labels_only() -> None:
    reference, noisy = cancer(seed=2), cancer(seed=2, label_noise=0.5)
    assert noisy.drop("malignant").equals(reference.drop("malignant"))
    assert noisy["malignant"].sum() == reference["malignant"].sum()
    assert not noisy["malignant"].equals(reference["malignant"])


@pytest.mark.parametrize(
    "kwargs",
    [{"rows": CANCER_ROWS + 1}, {"rows": -1}, {"covariate_shift": -0.1}, {"label_noise": 1.5}, {"seed": -1}],
)
def test_cancer_rejects_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        cancer(**kwargs)


def test_mesh_demo_data_writes_a_valid_cancer_batch(tmp_path: Path, cancer_schema: DatasetSchema) -> None:
    out = tmp_path / "cancer.csv"
    args = [
        "demo-data",
        "--dataset",
        "cancer",
        "--out",
        str(out),
        "--rows",
        "300",
        "--covariate-shift",
        "0.5",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    frame, failures = validate_batch(read_batch(out.read_bytes(), "csv", "cancer"), cancer_schema)
    assert failures == [] and frame.height == 300
    refused = CliRunner().invoke(
        app, ["demo-data", "--dataset", "cancer", "--out", str(out), "--concept-shift", "1"]
    )
    assert refused.exit_code != 0
