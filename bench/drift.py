"""Drift benchmark: the monitor's drift statistics at scale, and whether they detect what they should.

Two parts, on synthetic data of 20 input columns (15 numeric: normal, lognormal, exponential, Poisson
counts and uniform, some with 2% nulls; 5 categorical with 3 to 8 categories, some with 1% nulls):

- **scale**: ``services.monitor.drift.window_drift`` on one window of ``--rows`` (1,000,000) rows against
  a reference profile built by ``shared.ml.feature_sets.reference_profile`` from a ``--reference-rows``
  frame (and round-tripped through JSON, as ``profile.json`` is), plus ``chart_series`` per column, which
  ``Monitor._evaluate`` runs on every window too. Baseline in the same run: the same statistics by a
  straightforward numpy/scipy implementation (``np.histogram`` PSI, ``scipy.stats.ks_2samp`` and
  ``wasserstein_distance`` against the profile's sample, polars ``value_counts`` + ``scipy.stats.chisquare``
  for categories). Each contender runs in its own spawned child process that generates the data itself:
  wall time is the median of ``--repeats`` calls; peak memory is the child's ``VmHWM`` after it was reset
  through ``/proc/self/clear_refs`` once imports and data generation were done, minus its ``VmRSS`` at
  that moment (no tracemalloc, no sampling). Goals: <= 1 s and <= 600 MB.
- **power**: windows of ``--window-sizes`` (10k, 50k) rows in which column ``n00`` (normal) has its mean
  moved by 0.2 standard deviations and category ``c0_a`` of ``c0`` gained 10 percentage points (taken
  from the other categories in proportion); the other 18 columns are drawn like the reference. Over
  ``--seeds`` seeds (a new reference frame and profile per seed), the detection rate of each test on the
  shifted column and its false-alarm rate on the unshifted ones, at the fire thresholds of
  ``deploy/config/monitor/demo.yaml`` (``psi`` and ``ks``: what ``TriggerPolicy`` reads; ``chi2_p`` is
  only reported by the product, scored here at the per-test alpha below). Beside them, as what-ifs, the
  same tests at thresholds that scale with the window: ``max(floor, noise quantile)`` where the noise
  quantile is the KS critical value ``c(alpha) * sqrt(1/n + 1/m)`` or the PSI one
  ``chi2_{k-1}(1 - alpha) * (1/n + 1/N)``, alpha = 1e-3 per window split over the window's policy tests,
  for KS both against the profile's 500-value sample (m = 500) and against the whole reference column.

Usage: ``python -m bench.drift [--rows 1000000 --seeds 20 --parts scale power]``. Results go to
``bench/results/drift-*.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from scipy import stats

from bench.report import write_result
from services.monitor.drift import DEFAULT_EPS, window_drift
from services.monitor.policy import DRIFT_METHODS, load_monitor_config
from services.monitor.windows import chart_series
from shared.ml.datasets import ColumnSpec, DatasetSchema
from shared.ml.feature_sets import reference_profile
from shared.runtime.settings import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "deploy" / "config"
GOAL_SECONDS = 1.0
GOAL_MB = 600.0

# --- the synthetic population -------------------------------------------------------------------------

NUMERIC_KINDS = ("normal", "lognormal", "exponential", "poisson", "uniform")
NUMERIC = [f"n{i:02d}" for i in range(15)]
NUMERIC_NULLS = {name: 0.02 for i, name in enumerate(NUMERIC) if i % 3 == 2}
NORMAL_MEAN, NORMAL_SD = 50.0, 10.0
CATEGORICAL: dict[str, list[float]] = {
    "c0": [0.30, 0.25, 0.20, 0.15, 0.10],
    "c1": [0.50, 0.30, 0.20],
    "c2": [0.40, 0.30, 0.20, 0.10],
    "c3": [0.25, 0.20, 0.20, 0.15, 0.10, 0.10],
    "c4": [0.30, 0.20, 0.15, 0.10, 0.10, 0.05, 0.05, 0.05],
}
CATEGORICAL_NULLS = {"c3": 0.01, "c4": 0.01}
COLUMNS = [*NUMERIC, *CATEGORICAL]

SHIFTED_NUMERIC, SHIFT_SD = "n00", 0.2  # n00 is normal: its mean moves by 0.2 sd
SHIFTED_CATEGORICAL, SHIFT_SHARE = "c0", 0.10  # its first category c0_a gains 10 percentage points

# --- the what-if thresholds (window-scaled) --------------------------------------------------------------

WINDOW_ALPHA = 1e-3  # false-alarm budget of one window, split evenly over its policy tests (Bonferroni)
KS_FLOOR = 0.05  # smallest KS distance worth a retrain (a 0.2 sd mean shift of a normal is 0.080)
PSI_FLOOR = 0.02  # smallest PSI worth a retrain (0.2 sd on 10 decile bins ~0.04; +10 pp on c0 ~0.044)


def _categories(column: str) -> list[str]:
    return [f"{column}_{chr(ord('a') + i)}" for i in range(len(CATEGORICAL[column]))]


def _shifted_shares(shares: list[float]) -> list[float]:
    """The first category gains SHIFT_SHARE; the others give it up in proportion to their shares."""
    rest = 1.0 - shares[0]
    return [shares[0] + SHIFT_SHARE, *(s * (rest - SHIFT_SHARE) / rest for s in shares[1:])]


def bench_schema() -> DatasetSchema:
    columns = [
        ColumnSpec(name=name, dtype="int" if NUMERIC_KINDS[i % 5] == "poisson" else "float")
        for i, name in enumerate(NUMERIC)
    ]
    columns += [ColumnSpec(name=name, dtype="category", allowed=_categories(name)) for name in CATEGORICAL]
    return DatasetSchema(name="drift-bench", columns=columns)


def _draw(kind: str, rng: np.random.Generator, rows: int) -> np.ndarray:
    if kind == "normal":
        return rng.normal(NORMAL_MEAN, NORMAL_SD, rows)
    if kind == "lognormal":
        return rng.lognormal(10.0, 0.5, rows)
    if kind == "exponential":
        return rng.exponential(3.0, rows)
    if kind == "poisson":
        return rng.poisson(4.0, rows)
    return rng.uniform(0.0, 100.0, rows)


def _with_nulls(series: pl.Series, share: float, rng: np.random.Generator) -> pl.Series:
    if share <= 0:
        return series
    return series.scatter(np.flatnonzero(rng.random(series.len()) < share), None)


def make_frame(rows: int, seed: int | Sequence[int], shift: bool = False) -> pl.DataFrame:
    """``rows`` rows of the population; with ``shift``, n00 and c0 moved as the module docstring says."""
    rng = np.random.default_rng(seed)
    data: list[pl.Series] = []
    for i, name in enumerate(NUMERIC):
        kind = NUMERIC_KINDS[i % 5]
        values = _draw(kind, rng, rows)
        if shift and name == SHIFTED_NUMERIC:
            values = values + SHIFT_SD * NORMAL_SD
        series = pl.Series(name, values, dtype=pl.Int64 if kind == "poisson" else pl.Float64)
        data.append(_with_nulls(series, NUMERIC_NULLS.get(name, 0.0), rng))
    for name, shares in CATEGORICAL.items():
        p = _shifted_shares(shares) if shift and name == SHIFTED_CATEGORICAL else shares
        codes = rng.choice(len(p), size=rows, p=np.asarray(p) / sum(p))
        series = pl.Series(name, _categories(name), dtype=pl.String).gather(codes)
        data.append(_with_nulls(series, CATEGORICAL_NULLS.get(name, 0.0), rng))
    return pl.DataFrame(data)


# --- the baseline: the same statistics, straightforward numpy/scipy ------------------------------------


def _psi(reference: np.ndarray, current: np.ndarray) -> float:
    ref = np.clip(reference, DEFAULT_EPS, None)
    cur = np.clip(current, DEFAULT_EPS, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def baseline_window_drift(
    profile: dict[str, Any], window: pl.DataFrame, columns: list[str]
) -> dict[str, dict[str, float]]:
    """What ``window_drift`` computes, written the obvious way (same profile, same statistics)."""
    scores: dict[str, dict[str, float]] = {}
    for name in columns:
        entry = profile["columns"][name]
        series = window[name]
        null_delta = abs(series.null_count() / series.len() - float(entry["null_share"]))
        if entry["kind"] == "numeric":
            present = series.drop_nulls().cast(pl.Float64).to_numpy()
            sample = np.asarray(entry["sample"], dtype=np.float64)
            counts, _ = np.histogram(present, bins=[-np.inf, *entry["edges"], np.inf])
            std = float(entry["std"]) or 1.0
            scores[name] = {
                "psi": _psi(np.asarray(entry["shares"]), counts / present.size),
                "ks": float(stats.ks_2samp(present, sample).statistic),
                "wasserstein": float(stats.wasserstein_distance(present, sample)) / std,
                "null_share_delta": null_delta,
            }
        else:
            tally = dict(series.drop_nulls().value_counts().iter_rows())
            known = [tally.pop(c, 0) for c in entry["shares"]]
            counts = np.asarray([*known, sum(tally.values())], dtype=np.float64)
            ref = np.asarray([*entry["shares"].values(), 0.0])
            expected = np.clip(ref, DEFAULT_EPS, None)
            expected = expected / expected.sum() * counts.sum()
            scores[name] = {
                "psi": _psi(ref, counts / counts.sum()),
                "chi2_p": float(stats.chisquare(counts, expected).pvalue),
                "null_share_delta": null_delta,
            }
    return scores


# --- scale: one contender per child process ------------------------------------------------------------


def _status_kib(field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status in KiB (0 where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak() -> bool:
    """Resets the process's peak RSS (VmHWM) to its current RSS; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def scale_child(contender: str, rows: int, reference_rows: int, repeats: int) -> dict[str, Any]:
    """Runs in a fresh spawned process: builds the data, then times ``contender`` and reads its peak RSS."""
    schema = bench_schema()
    reference = make_frame(reference_rows, seed=1)
    started = time.perf_counter()
    profile = json.loads(json.dumps(reference_profile(reference, schema, COLUMNS)))  # as profile.json
    profile_seconds = time.perf_counter() - started
    del reference
    window = make_frame(rows, seed=2)
    gc.collect()
    baseline_kib = _status_kib("VmRSS")
    reset = _reset_peak()
    seconds: list[float] = []
    chart_seconds: list[float] = []
    scores: dict[str, dict[str, float]] = {}
    for _ in range(repeats):
        started = time.perf_counter()
        if contender == "product":
            scores = window_drift(profile, window, COLUMNS)
            seconds.append(time.perf_counter() - started)
            started = time.perf_counter()
            _ = {c: chart_series(profile["columns"][c], window[c]) for c in scores}
            chart_seconds.append(time.perf_counter() - started)
        else:
            scores = baseline_window_drift(profile, window, COLUMNS)
            seconds.append(time.perf_counter() - started)
    peak_kib = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "seconds": seconds,
        "chart_seconds": chart_seconds,
        "peak_mb": (peak_kib - baseline_kib) / 1024,
        "baseline_rss_mb": baseline_kib / 1024,
        "peak_reset": reset,
        "profile_seconds": profile_seconds,
        "scores": scores,
    }


def _max_difference(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> float:
    diffs = [
        abs(a[col][method] - b[col][method])
        for col in a
        for method in a[col]
        if method in b.get(col, {}) and math.isfinite(a[col][method]) and math.isfinite(b[col][method])
    ]
    return max(diffs, default=math.nan)


def run_scale(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    runs: dict[str, dict[str, Any]] = {}
    for contender in ("baseline", "product"):
        with context.Pool(1) as pool:
            runs[contender] = pool.apply(
                scale_child, (contender, args.rows, args.reference_rows, args.repeats)
            )
        run = runs[contender]
        console.print(
            f"scale {contender:>8}: {statistics.median(run['seconds']):6.2f} s (median of {args.repeats}), "
            f"peak +{run['peak_mb']:.0f} MB over {run['baseline_rss_mb']:.0f} MB"
            + (
                f", chart_series {statistics.median(run['chart_seconds']):.2f} s"
                if run["chart_seconds"]
                else ""
            )
        )
    product, baseline = runs["product"], runs["baseline"]
    drift_s = statistics.median(product["seconds"])
    chart_s = statistics.median(product["chart_seconds"])
    baseline_s = statistics.median(baseline["seconds"])
    return {
        "rows": args.rows,
        "columns": {"numeric": len(NUMERIC), "categorical": len(CATEGORICAL)},
        "reference_rows": args.reference_rows,
        "repeats": args.repeats,
        "seconds": {
            "window_drift": round(drift_s, 3),
            "chart_series": round(chart_s, 3),
            "evaluate_total": round(drift_s + chart_s, 3),
            "baseline": round(baseline_s, 3),
            "all_window_drift": [round(s, 3) for s in product["seconds"]],
            "all_baseline": [round(s, 3) for s in baseline["seconds"]],
        },
        "ratio_window_drift_over_baseline": round(drift_s / baseline_s, 3),
        "ratio_evaluate_over_baseline": round((drift_s + chart_s) / baseline_s, 3),
        "peak_mb": {"product": round(product["peak_mb"], 1), "baseline": round(baseline["peak_mb"], 1)},
        "child_rss_before_mb": {
            "product": round(product["baseline_rss_mb"], 1),
            "baseline": round(baseline["baseline_rss_mb"], 1),
        },
        "peak_covers": "product: window_drift + chart_series calls; baseline: its own calls",
        "peak_method": "child VmHWM after reset via /proc/self/clear_refs, minus VmRSS at the reset"
        if product["peak_reset"] and baseline["peak_reset"]
        else "child ru_maxrss (no reset possible: includes data generation), minus VmRSS after it",
        "goals": {
            "seconds": GOAL_SECONDS,
            "mb": GOAL_MB,
            "window_drift_met": drift_s <= GOAL_SECONDS and product["peak_mb"] <= GOAL_MB,
            "evaluate_met": drift_s + chart_s <= GOAL_SECONDS and product["peak_mb"] <= GOAL_MB,
        },
        "profile_build_seconds": round(product["profile_seconds"], 3),
        "max_score_difference_vs_baseline": _max_difference(product["scores"], baseline["scores"]),
    }


# --- power -------------------------------------------------------------------------------------------


def ks_noise(alpha: float, n: int, m: int) -> float:
    """Asymptotic two-sample KS critical value at ``alpha`` for sample sizes ``n`` and ``m``."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt(1 / n + 1 / m)


def psi_noise(alpha: float, bins: int, n: int, big_n: int) -> float:
    """PSI quantile at ``1 - alpha`` of two samples from one distribution: chi2_{k-1} * (1/n + 1/N)."""
    return float(stats.chi2.ppf(1 - alpha, max(bins - 1, 1))) * (1 / n + 1 / big_n)


def _score_window(
    profile: dict[str, Any], reference: pl.DataFrame, window: pl.DataFrame
) -> list[dict[str, Any]]:
    """One record per column: the product's scores plus KS against the whole reference column."""
    scores = window_drift(profile, window, COLUMNS)
    records = []
    for name in COLUMNS:
        entry, score = profile["columns"][name], scores[name]
        record: dict[str, Any] = {
            "column": name,
            "kind": entry["kind"],
            "shifted": name in (SHIFTED_NUMERIC, SHIFTED_CATEGORICAL),
            "psi": score["psi"],
            "bins": len(entry["shares"]),  # numeric: len(edges) + 1; categorical: categories
            "n": window.height - window[name].null_count(),
            "big_n": reference.height - reference[name].null_count(),
        }
        if entry["kind"] == "numeric":
            present = window[name].drop_nulls().cast(pl.Float64).to_numpy()
            full = reference[name].drop_nulls().cast(pl.Float64).to_numpy()
            record["ks"] = score["ks"]
            record["m"] = len(entry["sample"])
            record["ks_full"] = float(stats.ks_2samp(present, full, method="asymp").statistic)
        else:
            record["chi2_p"] = score["chi2_p"]
        records.append(record)
    return records


def _tests(
    psi_fire: float, ks_fire: float, alpha: float
) -> dict[str, Callable[[dict[str, Any]], bool | None]]:
    """Each test as ``record -> fires`` (None where it does not apply to the record's column)."""

    def numeric(test: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], bool | None]:
        return lambda r: test(r) if r["kind"] == "numeric" else None

    return {
        "psi": lambda r: r["psi"] >= psi_fire,
        "ks": numeric(lambda r: r["ks"] >= ks_fire),
        "chi2_p": lambda r: r["chi2_p"] < alpha if r["kind"] == "categorical" else None,
        "psi_scaled": lambda r: r["psi"] >= max(PSI_FLOOR, psi_noise(alpha, r["bins"], r["n"], r["big_n"])),
        "ks_sample500_scaled": numeric(lambda r: r["ks"] >= max(KS_FLOOR, ks_noise(alpha, r["n"], r["m"]))),
        "ks_full_reference_scaled": numeric(
            lambda r: r["ks_full"] >= max(KS_FLOOR, ks_noise(alpha, r["n"], r["big_n"]))
        ),
    }


def _rate(values: list[bool | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 3) if known else None


def _quantile(values: list[float], q: float) -> float:
    return round(float(np.quantile(values, q)), 4)


def _summary(
    records: list[dict[str, Any]], tests: dict[str, Callable[[dict[str, Any]], bool | None]]
) -> dict[str, Any]:
    shifted_num = [r for r in records if r["column"] == SHIFTED_NUMERIC]
    shifted_cat = [r for r in records if r["column"] == SHIFTED_CATEGORICAL]
    unshifted = [r for r in records if not r["shifted"]]
    rates = {
        name: {
            "detect_numeric_shift": _rate([test(r) for r in shifted_num]),
            "detect_categorical_shift": _rate([test(r) for r in shifted_cat]),
            "false_alarm_per_column": _rate([test(r) for r in unshifted]),
        }
        for name, test in tests.items()
    }
    windows: dict[int, list[dict[str, Any]]] = {}
    for r in unshifted:
        windows.setdefault(r["seed"], []).append(r)

    def window_rate(names: tuple[str, ...]) -> float | None:
        return _rate([any(tests[t](r) for r in rs for t in names) for rs in windows.values()])

    null_num = [r for r in unshifted if r["kind"] == "numeric"]
    return {
        "rates": rates,
        "window_false_alarm": {
            "policy_psi_ks": window_rate(("psi", "ks")),
            "scaled_psi_ks_full_reference": window_rate(("psi_scaled", "ks_full_reference_scaled")),
        },
        "scores": {
            "ks_shifted_vs_sample500": {
                "median": _quantile([r["ks"] for r in shifted_num], 0.5),
                "min": _quantile([r["ks"] for r in shifted_num], 0.0),
                "max": _quantile([r["ks"] for r in shifted_num], 1.0),
            },
            "ks_shifted_vs_full_reference": {
                "median": _quantile([r["ks_full"] for r in shifted_num], 0.5),
                "min": _quantile([r["ks_full"] for r in shifted_num], 0.0),
            },
            "ks_unshifted_vs_sample500": {
                "median": _quantile([r["ks"] for r in null_num], 0.5),
                "p95": _quantile([r["ks"] for r in null_num], 0.95),
                "max": _quantile([r["ks"] for r in null_num], 1.0),
            },
            "ks_unshifted_vs_full_reference": {
                "median": _quantile([r["ks_full"] for r in null_num], 0.5),
                "p95": _quantile([r["ks_full"] for r in null_num], 0.95),
                "max": _quantile([r["ks_full"] for r in null_num], 1.0),
            },
            "psi_shifted_numeric_median": _quantile([r["psi"] for r in shifted_num], 0.5),
            "psi_shifted_categorical_median": _quantile([r["psi"] for r in shifted_cat], 0.5),
            "psi_unshifted": {
                "p95": _quantile([r["psi"] for r in unshifted], 0.95),
                "max": _quantile([r["psi"] for r in unshifted], 1.0),
            },
        },
        "thresholds_scaled": {
            "ks_sample500": round(
                max(KS_FLOOR, ks_noise(_alpha(), shifted_num[0]["n"], shifted_num[0]["m"])), 4
            ),
            "ks_full_reference": round(
                max(KS_FLOOR, ks_noise(_alpha(), shifted_num[0]["n"], shifted_num[0]["big_n"])), 4
            ),
            "ks_full_reference_noise_only": round(
                ks_noise(_alpha(), shifted_num[0]["n"], shifted_num[0]["big_n"]), 4
            ),
            "psi_10_bins_noise_only": round(
                psi_noise(_alpha(), 10, shifted_num[0]["n"], shifted_num[0]["big_n"]), 5
            ),
        },
    }


def _percent(rate: float | None) -> str:
    return "   -" if rate is None else f"{rate:4.0%}"


def _alpha() -> float:
    """Per-test alpha: the window's budget over its policy tests (PSI on every column, KS on numeric)."""
    return WINDOW_ALPHA / (len(COLUMNS) * len(DRIFT_METHODS) - len(CATEGORICAL))


def run_power(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    config = load_monitor_config(CONFIG_DIR, "demo")
    psi_fire, ks_fire = config.drift.psi.fire, config.drift.ks.fire
    tests = _tests(psi_fire, ks_fire, _alpha())
    schema = bench_schema()
    records: dict[int, list[dict[str, Any]]] = {size: [] for size in args.window_sizes}
    started = time.perf_counter()
    for seed in range(args.seeds):
        reference = make_frame(args.power_reference_rows, seed=[1, seed])
        profile = reference_profile(reference, schema, COLUMNS)
        for size in args.window_sizes:
            window = make_frame(size, seed=[2, size, seed], shift=True)
            for record in _score_window(profile, reference, window):
                records[size].append({**record, "seed": seed})
    console.print(
        f"power: {args.seeds} seeds x {args.window_sizes} rows in {time.perf_counter() - started:.1f} s"
    )
    by_size = {str(size): _summary(rs, tests) for size, rs in records.items()}
    for size, summary in by_size.items():
        console.print(f"power, {size}-row windows: detect numeric / detect categorical / false alarm")
        for name, rate in summary["rates"].items():
            console.print(f"  {name:>24}: " + " / ".join(_percent(v) for v in rate.values()))
        console.print(f"  window false alarm: {summary['window_false_alarm']}")
        ks = summary["scores"]
        console.print(
            f"  KS shifted vs sample500 median {ks['ks_shifted_vs_sample500']['median']}, vs full "
            f"{ks['ks_shifted_vs_full_reference']['median']}; unshifted p95 vs sample500 "
            f"{ks['ks_unshifted_vs_sample500']['p95']}, vs full {ks['ks_unshifted_vs_full_reference']['p95']}"
        )
    return {
        "seeds": args.seeds,
        "reference_rows": args.power_reference_rows,
        "shift": {
            "numeric": f"{SHIFTED_NUMERIC} (normal) mean + {SHIFT_SD} sd",
            "categorical": f"{SHIFTED_CATEGORICAL}_a share {CATEGORICAL[SHIFTED_CATEGORICAL][0]} "
            f"-> {CATEGORICAL[SHIFTED_CATEGORICAL][0] + SHIFT_SHARE}, others in proportion",
            "population_ks_of_numeric_shift": round(2 * float(stats.norm.cdf(SHIFT_SD / 2)) - 1, 4),
        },
        "thresholds": {
            "policy": {"psi": psi_fire, "ks": ks_fire, "source": "deploy/config/monitor/demo.yaml"},
            "chi2_p_alpha": _alpha(),
            "scaled": f"max(floor, noise quantile at per-test alpha {_alpha():.2g}); floors KS {KS_FLOOR}, "
            f"PSI {PSI_FLOOR}",
        },
        "by_window_rows": by_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the scale window")
    parser.add_argument("--reference-rows", type=int, default=200_000, help="reference frame (scale)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per contender (median)")
    parser.add_argument("--seeds", type=int, default=20, help="windows per size in the power part")
    parser.add_argument("--window-sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--power-reference-rows", type=int, default=100_000, help="reference frame (power)")
    parser.add_argument("--parts", nargs="+", choices=["scale", "power"], default=["scale", "power"])
    args = parser.parse_args()
    console = Console(stderr=True, width=120)
    result: dict[str, Any] = {}
    if "scale" in args.parts:
        result["scale"] = run_scale(args, console)
    if "power" in args.parts:
        result["power"] = run_power(args, console)
    result["what"] = (
        "services.monitor.drift at 1M rows vs plain numpy/scipy; detection/false alarms at 10k/50k"
    )
    path = write_result("drift", result)
    console.print(f"-> {path}")


if __name__ == "__main__":
    main()
