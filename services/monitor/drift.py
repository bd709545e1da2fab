"""Drift statistics: how far a window of live inputs is from the reference profile of the serving model.

Pure functions over one window, no I/O and no state. The reference side is a column entry of
``shared.ml.feature_sets.reference_profile`` (``profile.json`` of the feature set the model was trained on):

* numeric: ``{"kind": "numeric", "edges", "shares", "null_share", "mean", "std", "sample"}``
* categorical: ``{"kind": "categorical", "shares": {category: share}, "null_share"}``

Distribution statistics (PSI, KS, Wasserstein, chi-square) compare the *present* values only; missing
values are scored separately as ``null_share_delta``, because the profile's shares are over present
values too and a null is not a bin of the distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

from shared.ml.feature_sets import bin_shares

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


def numeric_drift(reference: dict[str, Any], values: Values) -> dict[str, float]:
    """Scores of one numeric column: ``psi``, ``ks``, ``wasserstein`` (reference stds), ``null_share_delta``.

    ``values`` is the whole window (a numpy array, list or polars Series), missing values included: the
    null share is computed here. A window without a present value gets NaN for the distribution scores
    (nothing to compare), which the trigger policy reads as "no evidence" rather than as drift.
    """
    data = _as_float_array(values)
    missing = np.isnan(data)
    present = data[~missing]
    null_delta = abs(_null_share(int(missing.sum()), data.size) - float(reference["null_share"]))
    sample = np.asarray(reference.get("sample") or [], dtype=np.float64)
    if present.size == 0 or sample.size == 0:
        return {"psi": math.nan, "ks": math.nan, "wasserstein": math.nan, "null_share_delta": null_delta}

    drift_psi = psi(reference["shares"], bin_shares(present, list(reference["edges"])))
    # Only the statistic is needed; "asymp" skips the exact p-value, which is the slow part at n = 500.
    ks = float(stats.ks_2samp(present, sample, method="asymp").statistic)
    # Divided by the reference std so one threshold reads the same for ages and for incomes. A constant
    # reference column (std 0) has no natural unit; its raw distance is still 0 when nothing moved.
    std = float(reference.get("std") or 0.0)
    scale = std if std > 0 and math.isfinite(std) else 1.0
    wasserstein = float(stats.wasserstein_distance(present, sample)) / scale
    return {"psi": drift_psi, "ks": ks, "wasserstein": wasserstein, "null_share_delta": null_delta}


def _other_key(categories: list[str]) -> str:
    return _OTHER_FALLBACK if OTHER in categories else OTHER


def _category_counts(categories: list[str], values: Values) -> tuple[np.ndarray, int, int]:
    """Counts per reference category plus one trailing "other" count, the null count and the total."""
    series = values if isinstance(values, pl.Series) else pl.Series(values)
    present = series.drop_nulls().cast(pl.String)
    # value_counts aggregates in polars; the loop below runs over the few categories, not over rows.
    tally = dict(present.value_counts().iter_rows())
    known = np.array([tally.get(c, 0) for c in categories], dtype=np.float64)
    other = present.len() - known.sum()
    return np.append(known, other), series.null_count(), series.len()


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
        data = _as_float_array(values)
        missing = np.isnan(data)
        edges = list(reference["edges"])
        return {
            "kind": "numeric",
            "edges": edges,
            "shares": bin_shares(data[~missing], edges),
            "null_share": _null_share(int(missing.sum()), data.size),
        }
    categories = list(reference["shares"])
    counts, nulls, total = _category_counts(categories, values)
    shares = counts / max(counts.sum(), 1.0)
    return {
        "kind": "categorical",
        "shares": dict(zip([*categories, _other_key(categories)], shares.tolist(), strict=True)),
        "null_share": _null_share(nulls, total),
    }
