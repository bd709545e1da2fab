"""Expectations on the synthetic demo data, and the behaviour of its shift and noise knobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from shared.ml.datasets import DatasetSchema, load_schema
from shared.ops.demo_data import generate
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
