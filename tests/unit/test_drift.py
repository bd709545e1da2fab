"""Drift statistics against the demo data, and the false-alarm / detection rates of the demo thresholds."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl
import pytest
from scipy import stats

from services.monitor.drift import (
    OTHER,
    categorical_drift,
    current_distribution,
    numeric_drift,
    psi,
    window_drift,
)
from shared.ml.datasets import load_schema
from shared.ml.feature_sets import bin_shares, reference_profile, split_mask
from shared.ml.features import FeatureSpec
from shared.ml.monitoring import MonitorConfig, load_monitor_config
from shared.ops.demo_data import generate
from tests.support.data import CONFIG_DIR

SHIFTED = ["income", "age", "support_calls", "region"]
SEEDS = range(100, 120)
WINDOW_ROWS = 500


@pytest.fixture(scope="module")
def config() -> MonitorConfig:
    return load_monitor_config(CONFIG_DIR, "demo")


@pytest.fixture(scope="module")
def profile(spec: FeatureSpec) -> dict[str, Any]:
    """Built as build_feature_set builds profile.json: over the train split of the raw rows."""
    raw = generate(rows=3000, seed=0)
    train = raw.filter(~split_mask(raw, spec))
    return reference_profile(train, load_schema(CONFIG_DIR, "demo"), spec.input_columns)


def _drift(profile: dict[str, Any], spec: FeatureSpec, frame: pl.DataFrame) -> dict[str, dict[str, float]]:
    return window_drift(profile, frame, spec.input_columns)


def _fires(scores: dict[str, dict[str, float]], config: MonitorConfig) -> list[str]:
    """The drift tests at or above their fire threshold (what the trigger policy reads)."""
    limits = {"psi": config.drift.psi.fire, "ks": config.drift.ks.fire}
    return [
        f"{method}:{col}"
        for col, by_method in scores.items()
        for method, fire in limits.items()
        if by_method.get(method, -math.inf) >= fire
    ]


def _fire_rate(
    profile: dict[str, Any],
    spec: FeatureSpec,
    config: MonitorConfig,
    covariate_shift: float = 0.0,
    concept_shift: float = 0.0,
) -> float:
    """Share of 500-row windows (seeds 100..119) in which any drift test fires."""
    fired = []
    for seed in SEEDS:
        window = generate(
            rows=WINDOW_ROWS, seed=seed, covariate_shift=covariate_shift, concept_shift=concept_shift
        )
        fired.append(bool(_fires(_drift(profile, spec, window), config)))
    return sum(fired) / len(fired)


# --- psi ---------------------------------------------------------------------------------------------


def test_psi_of_identical_shares_is_zero() -> None:
    shares = [0.1, 0.2, 0.3, 0.4]
    assert psi(shares, shares) == 0.0
    assert psi([0.0, 0.5, 0.5], [0.0, 0.5, 0.5]) == 0.0


def test_psi_is_finite_with_empty_bins_and_grows_with_the_shift() -> None:
    reference = [0.25, 0.25, 0.25, 0.25]
    small = psi(reference, [0.3, 0.25, 0.25, 0.2])
    empty_bin = psi(reference, [0.5, 0.5, 0.0, 0.0])
    assert 0 < small < empty_bin < math.inf
    assert psi(reference, [0.3, 0.25, 0.25, 0.2]) == pytest.approx(psi([0.3, 0.25, 0.25, 0.2], reference))


def test_psi_rejects_mismatched_bins() -> None:
    with pytest.raises(ValueError, match="matching bins"):
        psi([0.5, 0.5], [1.0])


# --- per-column statistics on the demo data ------------------------------------------------------------


def test_two_reference_samples_stay_below_every_clear_threshold(
    profile: dict[str, Any], spec: FeatureSpec, config: MonitorConfig
) -> None:
    scores = _drift(profile, spec, generate(rows=3000, seed=1))
    assert set(scores) == set(spec.input_columns)
    for col, by_method in scores.items():
        assert by_method["psi"] < config.drift.psi.clear, col
        assert by_method["null_share_delta"] < 0.02, col
        if "ks" in by_method:
            assert by_method["ks"] < config.drift.ks.clear, col
            assert by_method["wasserstein"] < 0.15, col  # in reference stds
        else:
            assert by_method["chi2_p"] > 0.01, col


def test_covariate_shift_pushes_the_shifted_columns_past_fire(
    profile: dict[str, Any], spec: FeatureSpec, config: MonitorConfig
) -> None:
    reference = _drift(profile, spec, generate(rows=3000, seed=1))
    shifted = _drift(profile, spec, generate(rows=3000, seed=1, covariate_shift=1.0))
    for col in SHIFTED:
        assert shifted[col]["psi"] > config.drift.psi.fire, col
    for col in ("income", "age", "support_calls"):
        assert shifted[col]["ks"] > config.drift.ks.fire, col
        # About half a reference std or more: the shift moves each of these by >= 0.5 std.
        assert shifted[col]["wasserstein"] > 0.4 > 0.15 > reference[col]["wasserstein"], col
    assert shifted["region"]["chi2_p"] < 1e-6
    # The never-logged-in rate rises from 5% to 15%: the null share, not the distribution, shows it.
    assert shifted["last_login_days"]["null_share_delta"] == pytest.approx(0.10, abs=0.03)
    # tenure_months is the one input the shift leaves alone.
    assert shifted["tenure_months"]["psi"] < config.drift.psi.clear


def test_numeric_drift_takes_missing_values_as_nan_or_none(profile: dict[str, Any]) -> None:
    entry = profile["columns"]["last_login_days"]
    present = np.asarray(entry["sample"][:80], dtype=np.float64)
    with_nan = np.concatenate([present, np.full(20, np.nan)])
    with_none = np.array([*present.tolist(), *([None] * 20)], dtype=object)
    expected_delta = abs(0.2 - entry["null_share"])
    for values in (with_nan, with_none, pl.Series(with_none.tolist(), dtype=pl.Float64)):
        scores = numeric_drift(entry, values)
        assert scores["null_share_delta"] == pytest.approx(expected_delta)
        # Missing values are not part of the distribution: the same present values score the same.
        assert scores["ks"] == pytest.approx(numeric_drift(entry, present)["ks"])


def test_numeric_drift_without_present_values_is_no_evidence(profile: dict[str, Any]) -> None:
    entry = profile["columns"]["income"]
    scores = numeric_drift(entry, np.full(50, np.nan))
    assert math.isnan(scores["psi"]) and math.isnan(scores["ks"]) and math.isnan(scores["wasserstein"])
    assert scores["null_share_delta"] == pytest.approx(1.0 - entry["null_share"])


def test_wasserstein_is_in_reference_stds_and_survives_a_constant_reference() -> None:
    sample = [0.0, 1.0, 2.0, 3.0]
    entry = {"kind": "numeric", "edges": [1.0, 2.0], "shares": [0.25, 0.25, 0.5], "null_share": 0.0}
    moved = np.asarray(sample) + 2.0
    assert numeric_drift({**entry, "sample": sample, "std": 2.0}, moved)["wasserstein"] == pytest.approx(1.0)
    constant = numeric_drift({**entry, "sample": [5.0] * 4, "std": 0.0}, np.full(4, 5.0))
    assert constant["wasserstein"] == 0.0 and constant["ks"] == 0.0


def _draws(rng: np.random.Generator, kind: str, size: int, shift: float) -> np.ndarray:
    if kind == "normal":
        return rng.normal(shift, 1.0, size)
    if kind == "counts":  # heavy ties
        return rng.poisson(3.0 + shift, size).astype(np.float64)
    if kind == "three values":
        return rng.integers(0, 3, size).astype(np.float64)
    return np.round(rng.lognormal(5.0 + shift, 1.0, size), 1)  # ties after rounding


@pytest.mark.parametrize("kind", ["normal", "counts", "three values", "rounded lognormal"])
def test_numeric_scores_are_scipys_on_the_present_values(kind: str) -> None:
    """The sort-once statistics equal scipy's: ks_2samp (statistic and asymptotic p-value against a sample
    that stands for itself), wasserstein_distance, and bin_shares for PSI; missing values left out."""
    rng = np.random.default_rng(len(kind))
    for n, m in [(1, 1), (1, 7), (7, 1), (40, 3), (3, 40), (500, 500), (2000, 300), (300, 2000)]:
        shift = float(rng.normal(0.0, 0.2))
        sample = _draws(rng, kind, m, 0.0)
        window = _draws(rng, kind, n, shift)
        window[rng.random(n) < 0.1] = np.nan
        present = window[~np.isnan(window)]
        edges = sorted(set(np.quantile(sample, np.linspace(0.1, 0.9, 9), method="nearest").tolist()))
        entry = {
            "kind": "numeric", "edges": edges, "shares": bin_shares(sample, edges), "null_share": 0.0,
            "std": 1.0, "sample": rng.permutation(sample).tolist(),  # any order: sorted on use
        }  # fmt: skip
        scores = numeric_drift(entry, window)
        assert scores["null_share_delta"] == pytest.approx(1 - present.size / n)
        if present.size == 0:
            assert math.isnan(scores["ks"]) and math.isnan(scores["ks_p"])
            continue
        with np.errstate(divide="ignore"):  # scipy's p-value of one value against one divides by 0
            expected = stats.ks_2samp(present, sample, method="asymp")
        assert scores["ks"] == pytest.approx(expected.statistic, abs=1e-15), (n, m)
        # NaN where scipy's is (one value against one: effective size 0.5 rounds to 0).
        assert scores["ks_p"] == pytest.approx(expected.pvalue, rel=1e-12, abs=1e-300, nan_ok=True), (n, m)
        assert scores["wasserstein"] == pytest.approx(
            stats.wasserstein_distance(present, sample), rel=1e-11, abs=1e-12
        ), (n, m)
        assert scores["psi"] == pytest.approx(psi(entry["shares"], bin_shares(present, edges)), abs=1e-15)


def test_ks_p_counts_the_rows_the_sample_stands_for(profile: dict[str, Any]) -> None:
    """``sample_rows`` (the reference's present values) sizes the p-value; an older profile without it
    had a random sample, which stands for itself."""
    entry = profile["columns"]["income"]
    assert entry["sample_rows"] == len(entry["sample"])  # 2,232 train rows: all kept
    window = generate(rows=WINDOW_ROWS, seed=100)["income"]
    scores = numeric_drift(entry, window)
    as_if_larger = numeric_drift({**entry, "sample_rows": 10 * entry["sample_rows"]}, window)
    assert as_if_larger["ks"] == scores["ks"] and as_if_larger["ks_p"] < scores["ks_p"]
    older = {key: value for key, value in entry.items() if key != "sample_rows"}
    assert numeric_drift(older, window) == pytest.approx(scores)


def test_unseen_category_goes_to_other(profile: dict[str, Any], config: MonitorConfig) -> None:
    entry = profile["columns"]["region"]
    values = pl.Series(["north"] * 30 + ["south"] * 20 + ["east"] * 25 + ["west"] * 15 + ["mars"] * 10)
    dist = current_distribution(entry, values)
    assert list(dist["shares"]) == [*entry["shares"], OTHER]
    assert dist["shares"][OTHER] == pytest.approx(0.10)
    assert sum(dist["shares"].values()) == pytest.approx(1.0)
    scores = categorical_drift(entry, values)
    without_unseen = categorical_drift(entry, values.filter(values != "mars"))
    assert scores["psi"] > config.drift.psi.fire > without_unseen["psi"]
    assert scores["chi2_p"] < 1e-9 < without_unseen["chi2_p"]


def test_categorical_nulls_count_in_null_share_not_in_shares(profile: dict[str, Any]) -> None:
    entry = profile["columns"]["plan"]
    values = pl.Series(["basic", "plus", "premium", None, None], dtype=pl.String)
    dist = current_distribution(entry, values)
    assert dist["null_share"] == pytest.approx(0.4)
    assert sum(dist["shares"].values()) == pytest.approx(1.0)
    assert categorical_drift(entry, values)["null_share_delta"] == pytest.approx(0.4 - entry["null_share"])
    assert math.isnan(categorical_drift(entry, pl.Series([None, None], dtype=pl.String))["psi"])


def test_current_distribution_uses_the_reference_bins(profile: dict[str, Any]) -> None:
    entry = profile["columns"]["age"]
    window = generate(rows=WINDOW_ROWS, seed=100)["age"]
    dist = current_distribution(entry, window)
    assert dist["kind"] == "numeric" and dist["edges"] == entry["edges"]
    assert len(dist["shares"]) == len(entry["shares"]) and sum(dist["shares"]) == pytest.approx(1.0)
    assert dist["null_share"] == 0.0
    assert psi(entry["shares"], dist["shares"]) == pytest.approx(numeric_drift(entry, window)["psi"])


def test_window_drift_scores_listed_profiled_columns_only(profile: dict[str, Any]) -> None:
    window = generate(rows=WINDOW_ROWS, seed=100).drop("plan")
    scores = window_drift(profile, window, ["age", "region", "plan", "customer_id"])
    assert set(scores) == {"age", "region", "plan"}  # customer_id is not profiled
    assert set(scores["age"]) == {"psi", "ks", "ks_p", "wasserstein", "null_share_delta"}
    assert set(scores["region"]) == {"psi", "chi2_p", "null_share_delta"}
    # A profiled column missing from the traffic is scored as entirely missing.
    assert scores["plan"]["null_share_delta"] == pytest.approx(1.0)


# --- rates at the configured thresholds -------------------------------------------------------------


def test_false_alarm_rate_on_reference_traffic_is_at_most_5_percent(
    profile: dict[str, Any], spec: FeatureSpec, config: MonitorConfig
) -> None:
    """Bound: <= 5% of 500-row reference windows (20 seeds) have ANY psi/ks test at its fire threshold."""
    assert _fire_rate(profile, spec, config) <= 0.05


def test_covariate_shift_is_detected_in_at_least_95_percent_of_windows(
    profile: dict[str, Any], spec: FeatureSpec, config: MonitorConfig
) -> None:
    assert _fire_rate(profile, spec, config, covariate_shift=1.0) >= 0.95


def test_concept_shift_leaves_the_drift_tests_quiet(
    profile: dict[str, Any], spec: FeatureSpec, config: MonitorConfig
) -> None:
    """Only the label rule moves: input drift tests fire in <= 5% of windows (the performance test's job)."""
    assert _fire_rate(profile, spec, config, concept_shift=1.0) <= 0.05
