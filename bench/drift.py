"""Drift benchmark: the monitor's drift statistics at scale, and whether they detect what they should.

Two parts, on synthetic data of 20 input columns (15 numeric: normal, lognormal, exponential, Poisson
counts and uniform, some with 2% nulls; 5 categorical with 3 to 8 categories, some with 1% nulls):

- **scale**: ``services.monitor.drift.window_drift`` on one window of ``--rows`` (1,000,000) rows against
  a reference profile built by ``shared.ml.feature_sets.reference_profile`` from a ``--reference-rows``
  frame (and round-tripped through JSON, as ``profile.json`` is), plus ``chart_series`` per column, which
  ``evaluate`` runs on every window too. Baseline in the same run: the same statistics on the same
  profile by the previous, straightforward numpy/scipy implementation (``np.histogram`` PSI,
  ``scipy.stats.ks_2samp`` and ``wasserstein_distance`` per column, polars ``value_counts`` +
  ``scipy.stats.chisquare`` for categories); the two must agree (``max_score_difference_vs_baseline``).
  The parent writes the window (Parquet) and the profile (JSON) once; children read them, so each
  child's memory is the window plus what the drift code allocates:

  * time: one child, ``--rounds`` alternating rounds (baseline then product, product then baseline, ...)
    after a warm-up call of each on 1,000 rows, fewer (never under two) where the next would overrun
    ``--budget`` seconds on a busy machine; figures are medians.
  * memory: one child with glibc's mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_``) and polars'
    jemalloc purging at once, so freed memory leaves the process and each contender's peak is its own;
    peak = ``VmHWM`` after a reset through ``/proc/self/clear_refs`` minus ``VmRSS`` at the reset (no
    tracemalloc: it misses polars' allocations). That setting makes every large allocation fault in fresh
    pages, so this child is not timed.

  Goals: window_drift <= 1 s and <= 600 MB.
- **power**: windows of ``--window-sizes`` (10k, 50k) rows in which column ``n00`` (normal) has its mean
  moved by 0.2 standard deviations and category ``c0_a`` of ``c0`` gained 10 percentage points (taken
  from the other categories in proportion); the other 18 columns are drawn like the reference. Over
  ``--seeds`` seeds (a new ``--power-reference-rows`` reference frame and profile per seed), the detection
  rate of each test on the shifted columns and its false-alarm rate on the unshifted ones:

  * the policy's fixed thresholds (``psi``, ``ks`` of ``deploy/config/monitor/demo.yaml``, calibrated for
    500-row windows and deliberately left alone: they are not meant to fire on a 0.2 sd shift);
  * the size-aware ``ks_p`` (KS p-value for the window's size and the ``sample_rows`` the profile's
    sample stands for), at alpha = 1e-3 per test and at a Bonferroni alpha (1e-3 per window split over
    its 35 PSI/KS tests); baseline: the same on the previous profile, whose sample was 500 random values;
  * PSI at a floor of 0.02 and at ``max(floor, chi2_{k-1}(1 - alpha) (1/n + 1/N))``; chi-square at alpha.

Usage: ``python -m bench.drift [--rows 1000000 --rounds 3 --budget 25 --seeds 20 --parts scale power]``.
Results go to ``bench/results/drift-*.json``; ``make bench`` runs it (about 35 s on 2 idle cores).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from rich.console import Console
from scipy import stats

from bench.report import write_result
from services.monitor.drift import DEFAULT_EPS, current_distribution, window_drift

if TYPE_CHECKING:  # imported where used: the scale children import this module and only need numpy/scipy
    from shared.ml.datasets import DatasetSchema

GOAL_SECONDS = 1.0
GOAL_MB = 600.0
WARM_UP_ROWS = 1_000
# Memory child: every allocation of 128 KiB or more is its own mapping, returned to the kernel when freed
# (glibc), and polars' jemalloc purges freed pages at once, so RSS follows what is live.
EXACT_RSS_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "_RJEM_MALLOC_CONF": "dirty_decay_ms:0,muzzy_decay_ms:0"}

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

# --- the size-aware thresholds ----------------------------------------------------------------------------

WINDOW_ALPHA = 1e-3  # false-alarm budget of one window, split evenly over its PSI/KS tests (Bonferroni)
PSI_FLOOR = 0.02  # smallest PSI worth a retrain (0.2 sd on 10 decile bins ~0.04; +10 pp on c0 ~0.044)


def _categories(column: str) -> list[str]:
    return [f"{column}_{chr(ord('a') + i)}" for i in range(len(CATEGORICAL[column]))]


def _shifted_shares(shares: list[float]) -> list[float]:
    """The first category gains SHIFT_SHARE; the others give it up in proportion to their shares."""
    rest = 1.0 - shares[0]
    return [shares[0] + SHIFT_SHARE, *(s * (rest - SHIFT_SHARE) / rest for s in shares[1:])]


def bench_schema() -> DatasetSchema:
    from shared.ml.datasets import ColumnSpec, DatasetSchema

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


# --- scale: children reading one window -----------------------------------------------------------------


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


def _charts(profile: dict[str, Any], window: pl.DataFrame, scores: dict[str, Any]) -> None:
    from services.monitor.windows import chart_series  # imports mlflow: the time child only

    for name in scores:
        chart_series(profile["columns"][name], window[name])


def _distributions(profile: dict[str, Any], window: pl.DataFrame, scores: dict[str, Any]) -> None:
    """What ``chart_series`` computes (it adds labels only), without importing the monitor's models."""
    for name in scores:
        current_distribution(profile["columns"][name], window[name])


def _run(contender: str, profile: dict[str, Any], window: pl.DataFrame) -> dict[str, dict[str, float]]:
    if contender == "product":
        return window_drift(profile, window, COLUMNS)
    return baseline_window_drift(profile, window, COLUMNS)


def time_child(directory: Path, rounds: int, budget: float) -> dict[str, Any]:
    """Alternating rounds of both contenders on the window, the product's chart_series after each call;
    after two rounds, stops once another round would overrun ``budget`` seconds (a busy machine)."""
    profile = json.loads((directory / "profile.json").read_text())
    window = pl.read_parquet(directory / "window.parquet")
    small = window.head(WARM_UP_ROWS)
    for contender in ("baseline", "product"):  # first calls pay for lazy imports and caches
        _charts(profile, small, _run(contender, profile, small))
    seconds: dict[str, list[float]] = {"baseline": [], "product": [], "chart_series": []}
    scores: dict[str, dict[str, dict[str, float]]] = {}
    started_rounds = time.perf_counter()
    for i in range(rounds):
        elapsed = time.perf_counter() - started_rounds
        if i >= 2 and elapsed + elapsed / i > budget:
            break
        for contender in ("baseline", "product") if i % 2 == 0 else ("product", "baseline"):
            gc.collect()
            started = time.perf_counter()
            scores[contender] = _run(contender, profile, window)
            seconds[contender].append(time.perf_counter() - started)
            if contender == "product":
                started = time.perf_counter()
                _charts(profile, window, scores[contender])
                seconds["chart_series"].append(time.perf_counter() - started)
    return {"seconds": seconds, "scores": scores}


def memory_child(directory: Path) -> dict[str, Any]:
    """Peak RSS above the pre-call RSS of one call of each contender (and of the product's charts)."""
    profile = json.loads((directory / "profile.json").read_text())
    window = pl.read_parquet(directory / "window.parquet")
    small = window.head(WARM_UP_ROWS)
    for contender in ("baseline", "product"):
        _distributions(profile, small, _run(contender, profile, small))
    peaks: dict[str, float] = {}
    before_mb: dict[str, float] = {}
    reset = True
    steps: list[tuple[str, Callable[[], object]]] = [
        ("product", lambda: _run("product", profile, window)),
        ("chart_series", lambda: _distributions(profile, window, profile["columns"])),
        ("baseline", lambda: _run("baseline", profile, window)),
    ]
    for name, step in steps:
        gc.collect()
        before_kib = _status_kib("VmRSS")
        reset = _reset_peak() and reset
        step()
        peak_kib = _status_kib("VmHWM") if reset else resource_peak_kib()
        peaks[name] = (peak_kib - before_kib) / 1024
        before_mb[name] = before_kib / 1024
    return {
        "peak_mb": peaks,
        "rss_before_mb": before_mb["product"],
        "window_mb": window.estimated_size() / 2**20,
        "peak_reset": reset,
    }


def resource_peak_kib() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _child(kind: str, directory: Path, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    out = directory / f"{kind}.json"
    command = [sys.executable, "-m", "bench.drift", "--child", kind, "--child-dir", str(directory)]
    command += ["--rounds", str(args.rounds), "--budget", str(args.budget)]
    subprocess.run(command, check=True, env={**os.environ, **env}, cwd=Path(__file__).resolve().parent.parent)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _max_difference(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> float:
    diffs = [
        abs(a[col][method] - b[col][method])
        for col in a
        for method in a[col]
        if method in b.get(col, {}) and math.isfinite(a[col][method]) and math.isfinite(b[col][method])
    ]
    return max(diffs, default=math.nan)


def run_scale(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from shared.ml.feature_sets import reference_profile

    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        directory = Path(tmp)
        started = time.perf_counter()
        reference = make_frame(args.reference_rows, seed=1)
        started_profile = time.perf_counter()
        profile = reference_profile(reference, bench_schema(), COLUMNS)
        profile_seconds = time.perf_counter() - started_profile
        profile_json = json.dumps(profile)
        (directory / "profile.json").write_text(profile_json)
        del reference, profile
        make_frame(args.rows, seed=2).write_parquet(directory / "window.parquet", compression="uncompressed")
        console.print(f"scale: data and profile in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        timed = _child("time", directory, args, {})
        rounds = len(timed["seconds"]["product"])
        console.print(f"scale: {rounds} alternating rounds in {time.perf_counter() - started:.1f} s")
        memory = _child("memory", directory, args, EXACT_RSS_ENV)

    seconds, scores = timed["seconds"], timed["scores"]
    drift_s = statistics.median(seconds["product"])
    chart_s = statistics.median(seconds["chart_series"])
    baseline_s = statistics.median(seconds["baseline"])
    peaks = memory["peak_mb"]
    product_peak = max(peaks["product"], peaks["chart_series"])
    console.print(
        f"scale: window_drift {drift_s:.3f} s, chart_series {chart_s:.3f} s, baseline {baseline_s:.2f} s "
        f"(medians of {rounds}); peak +{peaks['product']:.0f} MB (charts +{peaks['chart_series']:.0f}),"
        f" baseline +{peaks['baseline']:.0f} MB over {memory['rss_before_mb']:.0f} MB"
    )
    numeric_entries = [c for c in json.loads(profile_json)["columns"].values() if c["kind"] == "numeric"]
    return {
        "rows": args.rows,
        "columns": {"numeric": len(NUMERIC), "categorical": len(CATEGORICAL)},
        "reference_rows": args.reference_rows,
        "rounds": rounds,
        "seconds": {
            "window_drift": round(drift_s, 3),
            "chart_series": round(chart_s, 3),
            "evaluate_total": round(drift_s + chart_s, 3),
            "baseline": round(baseline_s, 3),
            "all_window_drift": [round(s, 3) for s in seconds["product"]],
            "all_chart_series": [round(s, 3) for s in seconds["chart_series"]],
            "all_baseline": [round(s, 3) for s in seconds["baseline"]],
        },
        "ratio_window_drift_over_baseline": round(drift_s / baseline_s, 4),
        "ratio_evaluate_over_baseline": round((drift_s + chart_s) / baseline_s, 4),
        "peak_mb": {
            "product": round(product_peak, 1),
            "window_drift": round(peaks["product"], 1),
            "chart_series": round(peaks["chart_series"], 1),
            "baseline": round(peaks["baseline"], 1),
        },
        "child_rss_before_mb": round(memory["rss_before_mb"], 1),
        "window_mb": round(memory["window_mb"], 1),
        "peak_covers": "product: max of its window_drift call and of its chart_series' distributions; "
        "baseline: its own call",
        "peak_method": "memory child (fixed mmap threshold, jemalloc purging at once): VmHWM after reset "
        "via /proc/self/clear_refs, minus VmRSS at the reset"
        if memory["peak_reset"]
        else "ru_maxrss of the memory child (no reset possible) minus VmRSS before the call",
        "goals": {
            "seconds": GOAL_SECONDS,
            "mb": GOAL_MB,
            "window_drift_met": drift_s <= GOAL_SECONDS and peaks["product"] <= GOAL_MB,
            "evaluate_met": drift_s + chart_s <= GOAL_SECONDS and product_peak <= GOAL_MB,
        },
        "profile": {
            "build_seconds": round(profile_seconds, 3),
            "json_bytes": len(profile_json),
            "sample_values_per_numeric_column": max(len(c["sample"]) for c in numeric_entries),
        },
        "max_score_difference_vs_baseline": _max_difference(scores["product"], scores["baseline"]),
    }


# --- power -------------------------------------------------------------------------------------------


def ks_noise(alpha: float, n: int, m: int) -> float:
    """Asymptotic two-sample KS critical value at ``alpha`` for sample sizes ``n`` and ``m``."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt(1 / n + 1 / m)


def psi_noise(alpha: float, bins: int, n: int, big_n: int) -> float:
    """PSI quantile at ``1 - alpha`` of two samples from one distribution: chi2_{k-1} * (1/n + 1/N)."""
    return float(stats.chi2.ppf(1 - alpha, max(bins - 1, 1))) * (1 / n + 1 / big_n)


def previous_profile(profile: dict[str, Any], reference: pl.DataFrame) -> dict[str, Any]:
    """``profile`` as the previous ``column_profile`` wrote it: a 500-value random sample per numeric
    column (seed 0) and no ``sample_rows``, so KS compares the window with those 500 values."""
    columns = {}
    for name, entry in profile["columns"].items():
        if entry["kind"] == "numeric":
            values = reference[name].drop_nulls().cast(pl.Float64)
            sample = values.sample(min(values.len(), 500), seed=0).sort().to_list()
            entry = {k: v for k, v in entry.items() if k != "sample_rows"} | {"sample": sample}
        columns[name] = entry
    return {**profile, "columns": columns}


def _score_window(
    profile: dict[str, Any], previous: dict[str, Any], reference: pl.DataFrame, window: pl.DataFrame
) -> list[dict[str, Any]]:
    """One record per column: the product's scores, and KS against the previous 500-value sample."""
    scores = window_drift(profile, window, COLUMNS)
    before = window_drift(previous, window, NUMERIC)
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
            record |= {"ks": score["ks"], "ks_p": score["ks_p"], "m": entry["sample_rows"]}
            record |= {"ks_500": before[name]["ks"], "ks_p_500": before[name]["ks_p"]}
        else:
            record["chi2_p"] = score["chi2_p"]
        records.append(record)
    return records


Test = Callable[[dict[str, Any]], bool | None]


def _tests(psi_fire: float, ks_fire: float, significance_fire: float | None, alpha: float) -> dict[str, Test]:
    """Each test as ``record -> fires`` (None where it does not apply to the record's column)."""
    from services.monitor.policy import significance_score

    def significant(record: dict[str, Any]) -> bool | None:
        score = significance_score(record)
        return None if significance_fire is None or score is None else score >= significance_fire

    def numeric(test: Callable[[dict[str, Any]], bool]) -> Test:
        return lambda r: test(r) if r["kind"] == "numeric" else None

    return {
        "policy_psi": lambda r: r["psi"] >= psi_fire,
        "policy_ks": numeric(lambda r: r["ks"] >= ks_fire),
        "policy_significance": significant,
        "ks_p_1e-3": numeric(lambda r: r["ks_p"] < 1e-3),
        "ks_p_bonferroni": numeric(lambda r: r["ks_p"] < alpha),
        "baseline_ks_p_sample500_1e-3": numeric(lambda r: r["ks_p_500"] < 1e-3),
        "baseline_ks_p_sample500_bonferroni": numeric(lambda r: r["ks_p_500"] < alpha),
        "psi_floor": lambda r: r["psi"] >= PSI_FLOOR,
        "psi_scaled": lambda r: r["psi"] >= max(PSI_FLOOR, psi_noise(alpha, r["bins"], r["n"], r["big_n"])),
        "chi2_p_bonferroni": lambda r: r["chi2_p"] < alpha if r["kind"] == "categorical" else None,
    }


def _rate(values: list[bool | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 3) if known else None


def _quantile(values: list[float], q: float) -> float:
    return float(f"{float(np.quantile(values, q)):.4g}")


def _summary(records: list[dict[str, Any]], tests: dict[str, Test], alpha: float) -> dict[str, Any]:
    shifted_num = [r for r in records if r["column"] == SHIFTED_NUMERIC]
    shifted_cat = [r for r in records if r["column"] == SHIFTED_CATEGORICAL]
    unshifted = [r for r in records if not r["shifted"]]
    null_num = [r for r in unshifted if r["kind"] == "numeric"]
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

    def spread(values: list[float]) -> dict[str, float]:
        return {
            "min": _quantile(values, 0.0),
            "median": _quantile(values, 0.5),
            "max": _quantile(values, 1.0),
        }

    n, big_n = shifted_num[0]["n"], shifted_num[0]["big_n"]
    return {
        "rates": rates,
        "window_false_alarm": {
            "policy_psi_ks": window_rate(("policy_psi", "policy_ks")),
            "policy": window_rate(("policy_psi", "policy_ks", "policy_significance")),
            "ks_p_1e-3_psi_floor": window_rate(("ks_p_1e-3", "psi_floor")),
            "ks_p_bonferroni_psi_scaled": window_rate(("ks_p_bonferroni", "psi_scaled")),
        },
        "scores": {
            "ks_shifted": spread([r["ks"] for r in shifted_num]),
            "ks_shifted_vs_sample500": spread([r["ks_500"] for r in shifted_num]),
            "ks_p_shifted_max": _quantile([r["ks_p"] for r in shifted_num], 1.0),
            "ks_p_shifted_vs_sample500_median": _quantile([r["ks_p_500"] for r in shifted_num], 0.5),
            "ks_unshifted_over_critical_1e-3_max": _quantile(
                [r["ks"] / ks_noise(1e-3, r["n"], r["m"]) for r in null_num], 1.0
            ),
            "ks_p_unshifted_min": _quantile([r["ks_p"] for r in null_num], 0.0),
            "psi_shifted_numeric": spread([r["psi"] for r in shifted_num]),
            "psi_shifted_categorical": spread([r["psi"] for r in shifted_cat]),
            "psi_unshifted": {
                "p95": _quantile([r["psi"] for r in unshifted], 0.95),
                "max": _quantile([r["psi"] for r in unshifted], 1.0),
            },
        },
        "critical_values": {
            "ks_1e-3_whole_reference": round(ks_noise(1e-3, n, big_n), 4),
            "ks_1e-3_sample500": round(ks_noise(1e-3, n, 500), 4),
            "ks_bonferroni_whole_reference": round(ks_noise(alpha, n, big_n), 4),
            "psi_10_bins_bonferroni": round(psi_noise(alpha, 10, n, big_n), 5),
        },
    }


def _percent(rate: float | None) -> str:
    return "   -" if rate is None else f"{rate:4.0%}"


def _alpha() -> float:
    """Per-test alpha: the window's budget over its PSI (every column) and KS (numeric) tests."""
    return WINDOW_ALPHA / (len(COLUMNS) + len(NUMERIC))


def run_power(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from shared.ml.feature_sets import reference_profile
    from shared.ml.monitoring import load_monitor_config
    from shared.runtime.settings import REPO_ROOT

    config = load_monitor_config(REPO_ROOT / "deploy" / "config", "demo")
    psi_fire, ks_fire = config.drift.psi.fire, config.drift.ks.fire
    significance_fire = config.drift.significance.fire if config.drift.significance else None
    alpha = _alpha()
    tests = _tests(psi_fire, ks_fire, significance_fire, alpha)
    schema = bench_schema()
    records: dict[int, list[dict[str, Any]]] = {size: [] for size in args.window_sizes}
    started = time.perf_counter()
    for seed in range(args.seeds):
        reference = make_frame(args.power_reference_rows, seed=[1, seed])
        profile = reference_profile(reference, schema, COLUMNS)
        previous = previous_profile(profile, reference)
        for size in args.window_sizes:
            window = make_frame(size, seed=[2, size, seed], shift=True)
            for record in _score_window(profile, previous, reference, window):
                records[size].append({**record, "seed": seed})
    console.print(
        f"power: {args.seeds} seeds x {args.window_sizes} rows in {time.perf_counter() - started:.1f} s"
    )
    by_size = {str(size): _summary(rs, tests, alpha) for size, rs in records.items()}
    for size, summary in by_size.items():
        console.print(
            f"power, {size}-row windows: detect numeric / detect categorical / false alarm per column"
        )
        for name, rate in summary["rates"].items():
            console.print(f"  {name:>36}: " + " / ".join(_percent(v) for v in rate.values()))
        console.print(f"  window false alarm: {summary['window_false_alarm']}")
        scores = summary["scores"]
        console.print(
            f"  KS shifted median {scores['ks_shifted']['median']} (vs 500-value sample "
            f"{scores['ks_shifted_vs_sample500']['median']}); critical at 1e-3 "
            f"{summary['critical_values']['ks_1e-3_whole_reference']} (vs 500-value sample "
            f"{summary['critical_values']['ks_1e-3_sample500']}); unshifted KS / critical max "
            f"{scores['ks_unshifted_over_critical_1e-3_max']}"
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
            "policy": {
                "psi": psi_fire,
                "ks": ks_fire,
                "significance_minus_log10_p": significance_fire,
                "source": "deploy/config/monitor/demo.yaml",
            },
            "bonferroni_alpha": alpha,
            "psi_floor": PSI_FLOOR,
            "psi_scaled": f"max({PSI_FLOOR}, chi2_(k-1)(1 - {alpha:.2g}) * (1/n + 1/N))",
        },
        "by_window_rows": by_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the scale window")
    parser.add_argument("--reference-rows", type=int, default=200_000, help="reference frame (scale)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds (median)")
    parser.add_argument("--budget", type=float, default=25.0, help="seconds of timed rounds after two")
    parser.add_argument("--seeds", type=int, default=20, help="windows per size in the power part")
    parser.add_argument("--window-sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--power-reference-rows", type=int, default=100_000, help="reference frame (power)")
    parser.add_argument("--parts", nargs="+", choices=["scale", "power"], default=["scale", "power"])
    parser.add_argument("--child", choices=["time", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--child-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "time":
            child = time_child(args.child_dir, args.rounds, args.budget)
        else:
            child = memory_child(args.child_dir)
        (args.child_dir / f"{args.child}.json").write_text(json.dumps(child))
        return
    console = Console(stderr=True, width=120)
    started = time.perf_counter()
    result: dict[str, Any] = {}
    if "scale" in args.parts:
        result["scale"] = run_scale(args, console)
    if "power" in args.parts:
        result["power"] = run_power(args, console)
    result["what"] = (
        "services.monitor.drift at 1M rows vs the previous scipy-per-column code; detection and false "
        "alarms at 10k/50k rows, size-aware ks_p vs the previous 500-value sample"
    )
    result["bench_seconds"] = round(time.perf_counter() - started, 1)
    path = write_result("drift", result)
    console.print(f"-> {path} ({result['bench_seconds']} s)")


if __name__ == "__main__":
    main()
