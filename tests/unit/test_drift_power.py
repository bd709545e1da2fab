"""Statistical power of the drift scores on large windows (issue 13, item 6).

The policy's PSI and KS thresholds (``deploy/config/monitor/*.yaml``) are fixed numbers calibrated for
windows of a few hundred rows and stay as they are; its size-aware ``significance`` test is what fires on
large windows. What has to scale with the window is the evidence: the profile keeps
a reference sample that stands for the whole training column, and ``ks_p`` (the KS p-value for the
window's and the reference's sizes) reads a small but real shift in a 10,000-row window as the strong
evidence it is. Checked here on seeded synthetic data: a 0.2 standard-deviation mean shift of one numeric
column and a 10-point gain of one category's share, beside columns drawn like the reference.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import polars as pl
import pytest
from scipy import stats

from services.monitor.drift import ks_pvalue, ks_statistic, reference_rows, window_drift
from services.monitor.policy import SIGNIFICANCE, TriggerPolicy, WindowSignals
from shared.ml.datasets import ColumnSpec, DatasetSchema
from shared.ml.feature_sets import PROFILE_SAMPLE, reference_profile
from shared.ml.monitoring import load_monitor_config
from shared.runtime.settings import REPO_ROOT

ALPHA = 1e-3
REFERENCE_ROWS = 60_000
WINDOW_SIZES = (10_000, 50_000)
SEEDS = (0, 1, 2)
SHIFT_SD = 0.2  # the numeric shift, in standard deviations
SHIFT_SHARE = 0.10  # the categorical shift: the first category gains 10 points
PSI_LIMIT = 0.02  # a category change worth acting on: +10 points on c0 is ~0.044, noise at 10k ~0.0005

MEAN, SD = 50.0, 10.0
NUMERIC = {"shifted": "normal", "normal": "normal", "lognormal": "lognormal", "counts": "poisson"}
NUMERIC |= {"waiting": "exponential", "uniform": "uniform"}
CATEGORICAL = {"plan": [0.30, 0.25, 0.20, 0.15, 0.10], "region": [0.40, 0.30, 0.20, 0.10]}
SHIFTED = ("shifted", "plan")


def _categories(name: str) -> list[str]:
    return [f"{name}_{i}" for i in range(len(CATEGORICAL[name]))]


def _schema() -> DatasetSchema:
    columns = [
        ColumnSpec(name=name, dtype="int" if kind == "poisson" else "float") for name, kind in NUMERIC.items()
    ]
    columns += [ColumnSpec(name=name, dtype="category", allowed=_categories(name)) for name in CATEGORICAL]
    return DatasetSchema(name="drift-power", columns=columns)


def _frame(rows: int, seed: list[int], shift: bool = False) -> pl.DataFrame:
    """``rows`` rows of the population; with ``shift``, "shifted" moves by 0.2 sd and "plan_0" gains 10
    points (taken from the other plans in proportion). 2% of "normal" and 1% of "region" are missing."""
    rng = np.random.default_rng(seed)
    draws = {
        "normal": lambda: rng.normal(MEAN, SD, rows),
        "lognormal": lambda: rng.lognormal(10.0, 0.5, rows),
        "poisson": lambda: rng.poisson(4.0, rows),
        "exponential": lambda: rng.exponential(3.0, rows),
        "uniform": lambda: rng.uniform(0.0, 100.0, rows),
    }
    data: dict[str, Any] = {name: draws[kind]() for name, kind in NUMERIC.items()}
    if shift:
        data["shifted"] = data["shifted"] + SHIFT_SD * SD
    frame = pl.DataFrame(data).with_columns(
        pl.when(pl.lit(rng.random(rows) < 0.02)).then(None).otherwise(pl.col("normal")).alias("normal")
    )
    for name, shares in CATEGORICAL.items():
        if shift and name == "plan":
            rest = 1.0 - shares[0]
            shares = [shares[0] + SHIFT_SHARE, *(s * (rest - SHIFT_SHARE) / rest for s in shares[1:])]
        codes = rng.choice(len(shares), size=rows, p=np.asarray(shares) / sum(shares))
        values = pl.Series(name, _categories(name)).gather(codes)
        if name == "region":
            values = values.scatter(np.flatnonzero(rng.random(rows) < 0.01), None)
        frame = frame.with_columns(values)
    return frame


def ks_critical(alpha: float, n: int, m: int) -> float:
    """Asymptotic two-sample KS critical value: the statistic two samples of one distribution exceed
    with probability ``alpha``."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt(1 / n + 1 / m)


@pytest.fixture(scope="module")
def reference() -> pl.DataFrame:
    return _frame(REFERENCE_ROWS, [1])


@pytest.fixture(scope="module")
def profile(reference: pl.DataFrame) -> dict[str, Any]:
    """As ``profile.json`` holds it: through JSON and back."""
    built = reference_profile(reference, _schema(), [*NUMERIC, *CATEGORICAL])
    return dict(json.loads(json.dumps(built)))


Scores = dict[str, dict[str, float]]


@pytest.fixture(scope="module")
def scored(profile: dict[str, Any]) -> dict[tuple[int, int], tuple[Scores, dict[str, int]]]:
    """Scores of shifted windows and each column's present values, by (window rows, seed)."""
    columns = [*NUMERIC, *CATEGORICAL]
    scored = {}
    for size in WINDOW_SIZES:
        for seed in SEEDS:
            window = _frame(size, [2, size, seed], shift=True)
            present = {name: size - window[name].null_count() for name in columns}
            scored[(size, seed)] = (window_drift(profile, window, columns), present)
    return scored


def test_the_reference_sample_stands_for_the_whole_column(
    reference: pl.DataFrame, profile: dict[str, Any]
) -> None:
    """At most PROFILE_SAMPLE values whose ECDF is within 1 / (2 PROFILE_SAMPLE) of the whole column's."""
    for name in NUMERIC:
        entry = profile["columns"][name]
        full = np.sort(reference[name].drop_nulls().cast(pl.Float64).to_numpy())
        sample = np.asarray(entry["sample"])
        assert sample.size == PROFILE_SAMPLE and entry["sample_rows"] == full.size == reference_rows(entry)
        assert np.all(np.diff(sample) >= 0) and np.isin(sample, full).all(), name  # sorted, real values
        assert ks_statistic(full, sample) <= 0.5 / PROFILE_SAMPLE + 1 / full.size, name
    # profile.json stays small: ~200 KB per numeric column.
    assert len(json.dumps(profile)) < 300_000 * len(NUMERIC)


def test_a_small_reference_is_kept_whole() -> None:
    frame = _frame(3_000, [3])
    entry = reference_profile(frame, _schema(), ["normal"])["columns"]["normal"]
    present = frame["normal"].drop_nulls().sort().to_list()
    assert entry["sample"] == present and entry["sample_rows"] == len(present)


@pytest.mark.parametrize("size", WINDOW_SIZES)
def test_a_fifth_of_a_standard_deviation_is_detected_and_nothing_else_is(
    scored: dict[tuple[int, int], tuple[Scores, dict[str, int]]], profile: dict[str, Any], size: int
) -> None:
    """KS of the shifted column beyond the critical value at alpha = 0.001 (and ``ks_p`` below it) in every
    window; every unshifted column's within it."""
    for seed in SEEDS:
        scores, present = scored[(size, seed)]
        for name in NUMERIC:
            score, entry = scores[name], profile["columns"][name]
            critical = ks_critical(ALPHA, present[name], reference_rows(entry))
            if name == "shifted":
                assert score["ks"] > critical and score["ks_p"] < ALPHA, (seed, score)
            else:
                assert score["ks"] < critical and score["ks_p"] > ALPHA, (seed, name, score)


@pytest.mark.parametrize("size", WINDOW_SIZES)
def test_a_ten_point_category_change_is_detected_and_nothing_else_is(
    scored: dict[tuple[int, int], tuple[Scores, dict[str, int]]], size: int
) -> None:
    for seed in SEEDS:
        scores, _ = scored[(size, seed)]
        assert scores["plan"]["psi"] > PSI_LIMIT and scores["plan"]["chi2_p"] < ALPHA, (seed, scores["plan"])
        assert scores["region"]["psi"] < PSI_LIMIT / 4 and scores["region"]["chi2_p"] > ALPHA, seed
        # The numeric columns' bins too: only the shifted one moves past the limit.
        unshifted = {name: s["psi"] for name, s in scores.items() if name not in SHIFTED}
        assert max(unshifted.values()) < PSI_LIMIT / 4, (seed, unshifted)
        assert scores["shifted"]["psi"] > PSI_LIMIT, seed


def test_reference_windows_stay_quiet(profile: dict[str, Any]) -> None:
    """Unshifted 10,000-row windows: no KS p-value below alpha, no PSI near the limit."""
    for seed in SEEDS:
        scores = window_drift(profile, _frame(10_000, [4, seed]), [*NUMERIC, *CATEGORICAL])
        for name, score in scores.items():
            assert score["psi"] < PSI_LIMIT / 4, (seed, name, score)
            assert score.get("ks_p", 1.0) > ALPHA and score.get("chi2_p", 1.0) > ALPHA, (seed, name, score)


def test_ks_p_is_scipys_asymptotic_p_value_for_the_sizes_compared() -> None:
    rng = np.random.default_rng(7)
    window, sample = rng.normal(0.1, 1.0, 2_000), rng.normal(0.0, 1.0, 700)
    expected = stats.ks_2samp(window, sample, method="asymp")
    statistic = ks_statistic(np.sort(window), np.sort(sample))
    assert statistic == pytest.approx(expected.statistic, abs=1e-15)
    assert ks_pvalue(statistic, window.size, sample.size) == pytest.approx(expected.pvalue, rel=1e-12)
    assert math.isnan(ks_pvalue(statistic, 0, sample.size))


def test_a_500_value_sample_could_not_have_seen_it() -> None:
    """Why the profile's sample grew: against 500 reference values the KS noise at alpha = 0.001 exceeds
    the whole population distance of a 0.2 sd shift (2 Phi(0.1) - 1 = 0.080), however large the window;
    against the whole reference (60,000 values) it is a quarter of it at 10,000 rows."""
    distance = 2 * stats.norm.cdf(SHIFT_SD / 2) - 1
    assert ks_critical(ALPHA, 10**9, 500) > distance > 3.5 * ks_critical(ALPHA, 10_000, REFERENCE_ROWS)


def test_the_policy_fires_on_them_by_significance_and_stays_quiet_on_reference_windows(
    profile: dict[str, Any], scored: dict[tuple[int, int], tuple[Scores, dict[str, int]]]
) -> None:
    """The demo's monitor policy on these windows: its fixed PSI/KS thresholds (calibrated for 500 rows)
    would let a 0.2 sd shift through; its size-aware test fires on both shifted columns, and on nothing in
    windows drawn like the reference."""
    config = load_monitor_config(REPO_ROOT / "deploy" / "config", "demo")
    assert config.drift.significance is not None
    for size in WINDOW_SIZES:
        for seed in SEEDS:
            scores, _ = scored[(size, seed)]
            decision = TriggerPolicy(config).decide(WindowSignals(scores, None, 0), now=0)
            assert decision.episode_started, (size, seed, decision.reasons)
            assert {f for f in decision.fired if f.startswith(SIGNIFICANCE)} == {
                f"{SIGNIFICANCE}:{name}" for name in SHIFTED
            }, decision.fired
            assert not [f for f in decision.fired if f.startswith(("psi:", "ks:")) and "shifted" in f]
    for seed in SEEDS:
        quiet = window_drift(profile, _frame(10_000, [5, seed]), [*NUMERIC, *CATEGORICAL])
        decision = TriggerPolicy(config).decide(WindowSignals(quiet, None, 0), now=0)
        assert not decision.fired, (seed, decision.reasons)
