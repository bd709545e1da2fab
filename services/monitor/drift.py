"""Drift statistics: how far a window of live inputs is from the reference profile of the serving model.

Pure functions over one window, no I/O and no state. The reference side is a column entry of
``shared.ml.feature_sets.reference_profile`` (``profile.json`` of the feature set the model was trained on):

* numeric: ``{"kind": "numeric", "edges", "shares", "null_share", "mean", "std", "sample", "sample_rows"}``
  where ``sample`` is sorted and stands for ``sample_rows`` present reference values (all of them, or
  evenly spaced order statistics of them); profiles written before ``sample_rows`` existed hold a random
  sample, which stands for ``len(sample)`` values.
* categorical: ``{"kind": "categorical", "shares": {category: share}, "null_share"}``

Distribution statistics (PSI, KS, Wasserstein, chi-square) compare the *present* values only; missing
values are scored separately as ``null_share_delta``, because the profile's shares are over present
values too and a null is not a bin of the distribution.

A window can hold a million rows, so every statistic is computed from one sort of the window's present
values (numpy's sort is a few ms per million floats): bin counts, KS and Wasserstein then need only
searches of the window for the reference's few thousand points, never a search per window row. The
results are those of ``scipy.stats.ks_2samp`` and ``wasserstein_distance`` (tests pin them), without
their per-call sorting of both sides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

# The bucket for categories the reference never saw (a new region, a typo upstream). Named "other" so a
# plot can show it as is; a dataset that declares a category literally called "other" gets the fallback
# key instead, so the two never merge.
OTHER = "other"
_OTHER_FALLBACK = "__other__"

DEFAULT_EPS = 1e-4


def psi(
    reference: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray, eps: float = DEFAULT_EPS
) -> float:
    """Population Stability Index ``sum((c - r) * ln(c / r))`` over matching bins of two share vectors.

    Shares are clipped at ``eps`` first: an empty bin on either side would otherwise give an infinite
    (or undefined) term, and one empty bin in a 500-row window is noise, not infinite drift.
    """
    ref = np.clip(np.asarray(reference, dtype=np.float64), eps, None)
    cur = np.clip(np.asarray(current, dtype=np.float64), eps, None)
    if ref.shape != cur.shape:
        raise ValueError(f"psi needs matching bins, got {ref.shape} and {cur.shape}")
    return float(np.sum((cur - ref) * np.log(cur / ref)))


# A window's values as callers hold them: a numpy array, a polars Series, or a list from JSON records.
Values = np.ndarray | pl.Series | Sequence[Any]


def _as_float_array(values: Values) -> np.ndarray:
    """Values as float64 with every missing value (None, NaN, polars null) as NaN."""
    if isinstance(values, pl.Series):
        return values.cast(pl.Float64).to_numpy()
    # dtype=float turns None into NaN, so object arrays from JSON records need no special path.
    return np.asarray(values, dtype=np.float64).ravel()


def _null_share(missing: int, total: int) -> float:
    return missing / total if total else math.nan


def _sorted_present(values: Values) -> tuple[np.ndarray, int]:
    """The present values of a window, sorted, and the window's size (missing values included)."""
    data = _as_float_array(values)
    ordered = np.sort(data)  # NaN (every missing value) sorts last
    return ordered[: int(np.searchsorted(ordered, np.nan, side="left"))], data.size


def _sorted_bin_shares(ordered: np.ndarray, edges: Sequence[float]) -> list[float]:
    """``bin_shares`` of sorted values: the bins' counts from where the edges fall among the values."""
    below = np.searchsorted(ordered, np.asarray(edges, dtype=np.float64), side="left")  # values < edge
    counts = np.diff(np.concatenate(([0], below, [ordered.size])))
    return (counts / max(ordered.size, 1)).tolist()


def ks_statistic(ordered: np.ndarray, reference: np.ndarray) -> float:
    """Two-sample KS statistic of a sorted window against a sorted reference, as ``scipy.stats.ks_2samp``
    computes it (see ``ks_and_wasserstein``)."""
    return ks_and_wasserstein(ordered, reference)[0]


def wasserstein(ordered: np.ndarray, reference: np.ndarray) -> float:
    """First Wasserstein distance of a sorted window and a sorted reference, as
    ``scipy.stats.wasserstein_distance`` computes it (see ``ks_and_wasserstein``)."""
    return ks_and_wasserstein(ordered, reference)[1]


def ks_and_wasserstein(ordered: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """``sup |F - G|`` (KS) and ``integral |F - G| dx`` (Wasserstein-1) of the window's ECDF ``F`` (``n``
    sorted values) and the reference's ``G`` (``m`` sorted values), from one search of the window for
    each distinct reference value ``u_j``: ``le_j`` window values are <= ``u_j``, ``lt_j`` are < ``u_j``.

    KS: both ECDFs are right-continuous steps, so the supremum is reached at a data point. On ``[u_j,
    u_j+1)`` ``G`` is flat while ``F`` rises from ``le_j / n`` to ``lt_j+1 / n``, so the largest distance
    there is at one of those two ends.

    Wasserstein: on ``[a, b) = [u_j, u_j+1)`` with ``G = g``, ``F`` is ``le_j / n`` plus ``1/n`` for each
    window value passed; it crosses ``g`` at most once, at the ``k*``-th window value (``k* = ceil(g
    n)``), so the interval splits into a part where ``F <= g`` and one where ``F >= g``, each integrated
    in closed form from the count and sum of the window values in it (one ``np.add.reduceat`` over the
    window for every interval's sums). The tails: ``F`` alone below the smallest reference value, ``1 -
    F`` above the largest. Sums of values within one interval keep the rounding error at the size of an
    interval's values, not of the whole window's.
    """
    n, m = ordered.size, reference.size
    distinct, counts = np.unique(reference, return_counts=True)
    at_or_below = np.cumsum(counts)  # reference values <= each distinct one
    le = np.searchsorted(ordered, distinct, side="right")
    lt = np.searchsorted(ordered, distinct, side="left")

    g = at_or_below / m
    g_before = np.concatenate(([0.0], g[:-1]))
    ks = float(max(np.max(np.abs(le / n - g)), np.max(np.abs(lt / n - g_before))))

    # Intervals [a, b) between consecutive distinct reference values; window values strictly inside are
    # ordered[start:stop]. The k*-th value (index k* - 1) is where F reaches g.
    a, b, g_in = distinct[:-1], distinct[1:], g[:-1]
    start, stop = le[:-1], lt[1:]
    crossing = -((-at_or_below[:-1] * n) // m)  # ceil(g n), exact in integers
    below_end = np.clip(crossing - 1, start, stop)  # ordered[start:below_end]: F < g after them
    above_start = np.clip(crossing, start, stop)  # ordered[above_start:stop]: F >= g from them on
    # One boundary list for every sum needed: [0, lt_0) is the lower tail, [le_last, n) the upper one.
    k = distinct.size
    inner = np.empty((k, 4), dtype=np.int64)
    inner[:, 0], inner[:, 1] = lt, le
    inner[:-1, 2], inner[:-1, 3] = below_end, above_start
    inner[-1, 2:] = le[-1]
    bounds = np.concatenate(([0], inner.ravel(), [n]))
    sums = _segment_sums(ordered, bounds)
    lower_tail, upper_tail = sums[0], sums[-1]
    below_sum = sums[2:-1:4][: k - 1]
    above_sum = sums[4::4][: k - 1]

    cross_at = np.where(
        crossing <= start, a, np.where(crossing > stop, b, ordered[np.clip(crossing - 1, 0, n - 1)])
    )
    below = -((start / n - g_in) * (cross_at - a) + ((below_end - start) * cross_at - below_sum) / n)
    above = (above_start / n - g_in) * (b - cross_at) + ((stop - above_start) * b - above_sum) / n
    tails = (lt[0] * distinct[0] - lower_tail) / n + (upper_tail - (n - le[-1]) * distinct[-1]) / n
    return ks, float(tails + np.sum(below) + np.sum(above))


def _segment_sums(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """``sum(values[bounds[i]:bounds[i + 1]])`` for each i; ``bounds`` nondecreasing, from 0 to len."""
    starts = bounds[:-1]
    sums = np.zeros(starts.size, dtype=np.float64)
    valid = starts < values.size  # a start at len(values) is an empty segment
    if valid.any():
        sums[valid] = np.add.reduceat(values, starts[valid])
    sums[bounds[1:] == starts] = 0.0  # reduceat gives values[start] for an empty segment
    return sums


def ks_pvalue(statistic: float, n: int, m: int) -> float:
    """Two-sided p-value of a two-sample KS statistic between samples of ``n`` and ``m`` values: the
    asymptotic one of ``scipy.stats.ks_2samp(method="asymp")`` (Kolmogorov's distribution at the
    effective size ``n m / (n + m)``). Exact for continuous data; conservative (too large) with ties."""
    effective = round(n * m / (n + m)) if n > 0 and m > 0 else 0
    if effective < 1 or not math.isfinite(statistic):  # one value against one: no distribution to read
        return math.nan
    return float(np.clip(stats.kstwo.sf(statistic, effective), 0.0, 1.0))


def reference_rows(reference: dict[str, Any]) -> int:
    """How many present reference values the profile's ``sample`` stands for (``len(sample)`` for a
    profile without ``sample_rows``: its sample was a random one)."""
    rows = reference.get("sample_rows")
    return int(rows) if rows else len(reference.get("sample") or [])


def numeric_drift(reference: dict[str, Any], values: Values) -> dict[str, float]:
    """Scores of one numeric column: ``psi``, ``ks``, ``ks_p``, ``wasserstein`` (reference stds) and
    ``null_share_delta``.

    ``values`` is the whole window (a numpy array, list or polars Series), missing values included: the
    null share is computed here. A window without a present value gets NaN for the distribution scores
    (nothing to compare), which the trigger policy reads as "no evidence" rather than as drift.

    ``ks`` is the plain statistic, whose fixed thresholds are calibrated for one window size. ``ks_p`` is
    its p-value for the window's size and the reference's (``sample_rows``), which stays meaningful at
    any window size: at 10,000 rows a KS of 0.03 is far beyond noise, at 500 rows it is noise.
    """
    present, total = _sorted_present(values)
    null_delta = abs(_null_share(total - present.size, total) - float(reference["null_share"]))
    sample = np.sort(np.asarray(reference.get("sample") or [], dtype=np.float64))
    if present.size == 0 or sample.size == 0:
        nan = math.nan
        return {"psi": nan, "ks": nan, "ks_p": nan, "wasserstein": nan, "null_share_delta": null_delta}

    drift_psi = psi(reference["shares"], _sorted_bin_shares(present, reference["edges"]))
    ks, distance = ks_and_wasserstein(present, sample)
    # Divided by the reference std so one threshold reads the same for ages and for incomes. A constant
    # reference column (std 0) has no natural unit; its raw distance is still 0 when nothing moved.
    std = float(reference.get("std") or 0.0)
    scale = std if std > 0 and math.isfinite(std) else 1.0
    return {
        "psi": drift_psi,
        "ks": ks,
        "ks_p": ks_pvalue(ks, present.size, reference_rows(reference)),
        "wasserstein": distance / scale,
        "null_share_delta": null_delta,
    }


def _other_key(categories: list[str]) -> str:
    return _OTHER_FALLBACK if OTHER in categories else OTHER


def _category_counts(categories: list[str], values: Values) -> tuple[np.ndarray, int, int]:
    """Counts per reference category plus one trailing "other" count, the null count and the total."""
    series = values if isinstance(values, pl.Series) else pl.Series(values)
    # value_counts aggregates in polars (nulls as one None key, never a category); the loop below runs
    # over the few categories, not over rows.
    tally = dict(series.cast(pl.String).value_counts().iter_rows())
    known = np.array([tally.get(c, 0) for c in categories], dtype=np.float64)
    nulls = series.null_count()
    other = series.len() - nulls - known.sum()
    return np.append(known, other), nulls, series.len()


def categorical_drift(reference: dict[str, Any], values: pl.Series) -> dict[str, float]:
    """Scores of one categorical column: ``psi``, ``chi2_p`` (goodness of fit), ``null_share_delta``.

    Values outside the reference categories count in an extra "other" bucket whose reference share is
    zero (clipped at eps), so an unseen category raises PSI and sinks the chi-square p-value.
    """
    categories = list(reference["shares"])
    counts, nulls, total = _category_counts(categories, values)
    null_delta = abs(_null_share(nulls, total) - float(reference["null_share"]))
    n = counts.sum()
    if n == 0:
        return {"psi": math.nan, "chi2_p": math.nan, "null_share_delta": null_delta}

    ref_shares = np.append(np.asarray(list(reference["shares"].values()), dtype=np.float64), 0.0)
    drift_psi = psi(ref_shares, counts / n)
    # chisquare divides by the expected counts, so a zero share (the "other" bucket, a category absent
    # from training) is clipped at eps; renormalising keeps observed and expected totals equal, which
    # scipy checks.
    expected = np.clip(ref_shares, DEFAULT_EPS, None)
    expected = expected / expected.sum() * n
    chi2_p = float(stats.chisquare(counts, expected).pvalue)
    return {"psi": drift_psi, "chi2_p": chi2_p, "null_share_delta": null_delta}


def window_drift(
    profile: dict[str, Any], window: pl.DataFrame, columns: list[str]
) -> dict[str, dict[str, float]]:
    """Scores of every column in ``columns`` that the profile describes, keyed by column then method.

    ``profile`` is a whole ``reference_profile`` (with its ``"columns"`` mapping). A profiled column the
    window lacks is scored as entirely missing: that is what the live records looked like.
    """
    entries: dict[str, Any] = profile["columns"]
    scores: dict[str, dict[str, float]] = {}
    for name in columns:
        entry = entries.get(name)
        if entry is None:
            continue
        series = window[name] if name in window.columns else pl.Series(name, [None] * window.height)
        if entry["kind"] == "numeric":
            scores[name] = numeric_drift(entry, series)
        else:
            scores[name] = categorical_drift(entry, series)
    return scores


def current_distribution(reference: dict[str, Any], values: Values) -> dict[str, Any]:
    """The window's shares in the reference's own bins or categories, for a reference-vs-current plot.

    Numeric: ``{"kind", "edges", "shares" (len(edges) + 1), "null_share"}``; categorical: ``{"kind",
    "shares": {category: share, ..., "other": share}, "null_share"}``. Shares are over present values,
    as in the profile.
    """
    if reference["kind"] == "numeric":
        present, total = _sorted_present(values)
        edges = list(reference["edges"])
        return {
            "kind": "numeric",
            "edges": edges,
            "shares": _sorted_bin_shares(present, edges),
            "null_share": _null_share(total - present.size, total),
        }
    categories = list(reference["shares"])
    counts, nulls, total = _category_counts(categories, values)
    shares = counts / max(counts.sum(), 1.0)
    return {
        "kind": "categorical",
        "shares": dict(zip([*categories, _other_key(categories)], shares.tolist(), strict=True)),
        "null_share": _null_share(nulls, total),
    }
