"""Demo data: seeded synthetic customer churn for the ``demo`` dataset (``deploy/config/datasets/demo.yaml``),
and scikit-learn's bundled breast-cancer data for the ``cancer`` dataset (see :func:`cancer`).

``generate(rows=..., seed=...)`` returns a polars frame whose columns, order and dtypes match the declared
schema. The same arguments always give the same frame. Three knobs let the demo show what the mesh is meant
to catch:

* ``covariate_shift`` (0 = reference, about 1 = strong, more is allowed): moves the *inputs*. Customers get
  older and poorer, make more support calls, lean towards the ``south`` region and the ``basic`` plan, and
  more of them have never logged in. The null rate of ``last_login_days`` stays under the 20% the schema
  allows. The label rule does not change.
* ``concept_shift`` (0..1): moves the *label rule* while the inputs stay where they were. Long tenure
  starts to predict churn instead of loyalty, the plan and region effects turn around, and older customers
  who call support a lot start to churn. A model trained on reference data loses most of its AUC.
* ``label_noise`` (0..1): that share of rows has its labels shuffled among themselves, so the churn rate
  stays the same but the signal goes. 1.0 is a "poisoned" batch with no signal at all.

``start`` sets the first ``event_time``; each further row comes one to five minutes later.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

REGIONS = ("north", "south", "east", "west")
PLANS = ("basic", "plus", "premium")

# One customer as a prediction request names it: what the demo, the e2e tests and the benchmark send.
EXAMPLE_RECORD: dict[str, object] = {
    "age": 44, "income": 38_000.0, "tenure_months": 5, "monthly_spend": 120.0,
    "support_calls": 4, "last_login_days": 21.0, "region": "south", "plan": "basic",
}  # fmt: skip

# Where covariate shift pulls the category mixes (towards 'south' and 'basic').
_REGION_REF = np.array([0.30, 0.20, 0.25, 0.25])
_REGION_SHIFTED = np.array([0.10, 0.60, 0.15, 0.15])
_PLAN_REF = np.array([0.40, 0.35, 0.25])
_PLAN_SHIFTED = np.array([0.75, 0.18, 0.07])

# Base monthly spend per plan (basic, plus, premium), in currency units.
_PLAN_SPEND = np.array([35.0, 70.0, 130.0])

_NULL_RATE_REF = 0.05
# Kept clearly below the schema's max_null_rate of 0.2, so that even a heavily shifted batch is still valid
# and the drift monitor (not ingest validation) is what notices it.
_NULL_RATE_CAP = 0.17

# Calibrated so that the reference churn rate is roughly 28%.
_INTERCEPT = -1.25


def generate(
    *,
    rows: int,
    seed: int = 0,
    covariate_shift: float = 0.0,
    concept_shift: float = 0.0,
    label_noise: float = 0.0,
    start: datetime | None = None,
) -> pl.DataFrame:
    """Generate ``rows`` rows of the demo churn dataset; see the module docstring for the knobs."""
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if covariate_shift < 0:
        raise ValueError(f"covariate_shift must be >= 0, got {covariate_shift}")
    if not 0.0 <= concept_shift <= 1.0:
        raise ValueError(f"concept_shift must be in [0, 1], got {concept_shift}")
    if not 0.0 <= label_noise <= 1.0:
        raise ValueError(f"label_noise must be in [0, 1], got {label_noise}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")

    rng = np.random.default_rng(seed)
    s = float(covariate_shift)
    # Mixing weights saturate so that shifts beyond 1 still yield valid probability vectors.
    mix = min(s, 1.5) / 1.5

    # Every random draw below happens in a fixed order and amount whatever the knobs are, so two frames with
    # the same seed differ only by what the knobs change (handy when comparing shifted and reference data).
    gaps_s = rng.integers(60, 301, size=rows)
    age_z = rng.standard_normal(rows)
    income_z = rng.standard_normal(rows)
    tenure_u = rng.exponential(1.0, size=rows)
    spend_z = rng.standard_normal(rows)
    calls_u = rng.random(rows)
    login_u = rng.exponential(1.0, size=rows)
    null_u = rng.random(rows)
    region_u = rng.random(rows)
    plan_u = rng.random(rows)
    label_u = rng.random(rows)

    region_idx = _pick(region_u, (1 - mix) * _REGION_REF + mix * _REGION_SHIFTED)
    plan_idx = _pick(plan_u, (1 - mix) * _PLAN_REF + mix * _PLAN_SHIFTED)

    age = np.clip(np.rint(42.0 + 8.0 * s + 13.0 * age_z), 18, 100).astype(np.int64)
    # Income rises with age (career) and drops under shift; lognormal keeps it positive and right-skewed.
    log_income = np.log(55_000.0) - 0.35 * s + 0.008 * (age - 42) + 0.45 * income_z
    income = np.clip(np.round(np.exp(log_income), 2), 0.0, 1_000_000.0)
    tenure = np.clip(np.floor(36.0 * tenure_u), 0, 600).astype(np.int64)
    spend = np.clip(np.round(_PLAN_SPEND[plan_idx] * np.exp(0.35 * spend_z), 2), 0.0, 10_000.0)
    calls = np.clip(_poisson_from_uniform(calls_u, 1.5 * (1.0 + s)), 0, 100).astype(np.int64)
    login = np.clip(np.round(20.0 * (1.0 + 0.5 * s) * login_u, 1), 0.0, 3650.0)
    null_rate = min(_NULL_RATE_REF + 0.10 * s, _NULL_RATE_CAP)
    never_logged_in = null_u < null_rate

    logit = _churn_logit(
        age=age,
        income=income,
        tenure=tenure,
        spend=spend,
        calls=calls,
        login=login,
        never_logged_in=never_logged_in,
        region_idx=region_idx,
        plan_idx=plan_idx,
        concept=float(concept_shift),
    )
    churned = (label_u < _sigmoid(logit)).astype(np.int64)

    # Drawn last, so that label noise never changes the features or the clean labels of a seed.
    n_noisy = round(label_noise * rows)
    if n_noisy > 1:
        noisy = rng.choice(rows, size=n_noisy, replace=False)
        churned[noisy] = churned[noisy][rng.permutation(n_noisy)]

    first = _as_utc(start or DEFAULT_START)
    first_us = (first - _EPOCH) // timedelta(microseconds=1)
    # The first row sits exactly at ``start``; the first gap is dropped rather than special-cased.
    offsets_us = (np.cumsum(gaps_s) - gaps_s[:1].sum()) * 1_000_000

    return pl.DataFrame(
        {
            "customer_id": pl.int_range(rows, eager=True).cast(pl.String).str.zfill(7),
            "event_time": pl.Series(first_us + offsets_us, dtype=pl.Int64),
            "age": age,
            "income": income,
            "tenure_months": tenure,
            "monthly_spend": spend,
            "support_calls": calls,
            "last_login_days": pl.Series(login).scatter(np.flatnonzero(never_logged_in), None),
            "region": pl.Series(REGIONS)[region_idx],
            "plan": pl.Series(PLANS)[plan_idx],
            "churned": churned,
        }
    ).with_columns(
        # The seed is part of the id so that batches made with different seeds never collide.
        customer_id=pl.lit(f"c{seed:04d}-") + pl.col("customer_id"),
        event_time=pl.from_epoch("event_time", time_unit="us").dt.replace_time_zone("UTC"),
        last_login_days=pl.col("last_login_days").cast(pl.Float64),
    )


def _churn_logit(
    *,
    age: np.ndarray,
    income: np.ndarray,
    tenure: np.ndarray,
    spend: np.ndarray,
    calls: np.ndarray,
    login: np.ndarray,
    never_logged_in: np.ndarray,
    region_idx: np.ndarray,
    plan_idx: np.ndarray,
    concept: float,
) -> np.ndarray:
    """The churn log-odds; ``concept`` (0..1) blends from the reference rule to the drifted one."""
    c = concept
    # Centered on reference-typical values so the intercept alone sets the base rate.
    tenure_term = np.log1p(tenure) - np.log1p(24.0)
    # Spending a big slice of one's income on the service makes cancelling attractive.
    burden = 12.0 * spend / np.maximum(income, 1.0)
    burden_term = np.minimum(burden, 0.2) / 0.2 * 2.0 - 0.5
    login_term = np.where(never_logged_in, 1.0, np.log1p(login) / np.log1p(20.0) - 0.9)
    calls_term = np.minimum(calls, 10) - 1.5

    # Under concept shift loyalty turns around: long-tenure customers leave, basic-plan users stay, the
    # region effects flip, and support calls matter less except for older customers.
    region_ref = np.array([-0.3, 0.5, 0.0, -0.2])[region_idx]
    region_new = np.array([0.4, -0.6, 0.2, 0.3])[region_idx]
    plan_ref = np.array([0.8, 0.0, -0.8])[plan_idx]
    plan_new = np.array([-0.8, 0.1, 0.9])[plan_idx]
    senior_callers = ((age >= 55) & (calls >= 3)).astype(np.float64)

    return (
        _INTERCEPT
        + (1.0 - 2.0 * c) * -1.1 * tenure_term
        + (1.0 - 0.7 * c) * 0.7 * calls_term
        + (1.0 - c) * 1.1 * burden_term
        + (1.0 - c) * 1.0 * login_term
        + (1.0 - c) * region_ref
        + c * region_new
        + (1.0 - c) * plan_ref
        + c * plan_new
        + c * 1.5 * senior_callers
    )


def _pick(u: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Map uniform draws to category indices via the inverse CDF, so a shifted mix reuses the same draws."""
    cdf = np.cumsum(probs / probs.sum())
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(probs) - 1)


def _poisson_from_uniform(u: np.ndarray, lam: float) -> np.ndarray:
    """Poisson quantiles of uniform draws: a shifted rate moves every row up rather than redrawing it."""
    ks = np.arange(0, 101)
    log_pmf = ks * np.log(lam) - lam - np.cumsum(np.log(np.maximum(ks, 1)))
    cdf = np.cumsum(np.exp(log_pmf))
    return np.minimum(np.searchsorted(cdf, u, side="right"), 100)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _as_utc(moment: datetime) -> datetime:
    # A naive start is taken to be UTC already rather than local time, so results do not depend on the host.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# --- the cancer dataset ---------------------------------------------------------------------------------

CANCER_ROWS = 569  # the Wisconsin diagnostic breast-cancer data as bundled with scikit-learn
# covariate_shift scales the size measurements of the cell nuclei (radius, perimeter, area; each as mean,
# standard error and worst of an image), as a recalibrated scanner would: lengths by k, areas by k**2.
_CANCER_SHIFT_PER_UNIT = 0.2  # covariate_shift = 1 reads every length 20% larger (areas 44%)


@functools.cache
def _cancer_source() -> pl.DataFrame:
    """The bundled data as one frame: snake_case feature columns, then ``malignant`` (1 = malignant).

    scikit-learn codes the target 0 = malignant, 1 = benign; the dataset declares the label the other
    way round, so a positive score means "malignant" as a clinician would read it.
    """
    from sklearn.datasets import load_breast_cancer  # slow to import; only a cancer batch needs it

    bunch = load_breast_cancer()
    columns = {str(name).replace(" ", "_"): bunch.data[:, j] for j, name in enumerate(bunch.feature_names)}
    return pl.DataFrame({**columns, "malignant": (1 - bunch.target).astype(np.int64)})


def cancer_feature_columns() -> list[str]:
    """The 30 measurement columns of the cancer dataset, in the declared order."""
    return [c for c in _cancer_source().columns if c != "malignant"]


def cancer_record(index: int = 0) -> dict[str, object]:
    """One sample's measurements, as a prediction request names them (row 0 is a malignant tumour)."""
    return _cancer_source().drop("malignant").row(index, named=True)


def cancer(
    *,
    rows: int | None = None,
    seed: int = 0,
    covariate_shift: float = 0.0,
    label_noise: float = 0.0,
    start: datetime | None = None,
    event_time: bool = True,
) -> pl.DataFrame:
    """A batch of the ``cancer`` dataset (``deploy/config/datasets/cancer.yaml``) from real data, offline.

    ``rows=None`` gives all 569 samples in their bundled order; ``rows=n`` a seeded sample of ``n``
    distinct samples. Ids name the bundled row (``wdbc-000``..``wdbc-568``), so a sample keeps its id, and
    its side of the train/holdout split, in every batch it is part of. The knobs:

    * ``covariate_shift`` (>= 0): every size measurement (radius, perimeter and area, as mean, error and
      worst) reads larger, as from a recalibrated scanner: lengths by ``1 + 0.2 * shift``, areas by its
      square. Labels stay those of the samples. Up to 2 stays within the declared ranges.
    * ``label_noise`` (0..1): that share of rows has its labels shuffled among themselves.

    ``event_time`` adds the column (declared optional): ``start`` and then one to five minutes apart.
    """
    if rows is not None and not 0 <= rows <= CANCER_ROWS:
        raise ValueError(f"rows must be in [0, {CANCER_ROWS}] (the dataset's size), got {rows}")
    if covariate_shift < 0:
        raise ValueError(f"covariate_shift must be >= 0, got {covariate_shift}")
    if not 0.0 <= label_noise <= 1.0:
        raise ValueError(f"label_noise must be in [0, 1], got {label_noise}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")

    rng = np.random.default_rng(seed)
    source = _cancer_source().with_row_index("row")
    n = CANCER_ROWS if rows is None else rows
    # Drawn in a fixed order whatever the knobs are, as in generate(): the knobs change only what they name.
    picked = np.arange(CANCER_ROWS) if rows is None else rng.choice(CANCER_ROWS, size=n, replace=False)
    gaps_s = rng.integers(60, 301, size=n)
    frame = source[picked]

    k = 1.0 + _CANCER_SHIFT_PER_UNIT * float(covariate_shift)
    if k != 1.0:
        factors = {"radius": k, "perimeter": k, "area": k * k}
        frame = frame.with_columns(
            (pl.col(c) * factors[measure]).round(6)
            for c in cancer_feature_columns()
            if (measure := _cancer_measure(c)) in factors
        )

    labels = frame["malignant"].to_numpy().copy()
    n_noisy = round(label_noise * n)
    if n_noisy > 1:
        noisy = rng.choice(n, size=n_noisy, replace=False)
        labels[noisy] = labels[noisy][rng.permutation(n_noisy)]

    first = _as_utc(start or DEFAULT_START)
    offsets_s = np.cumsum(gaps_s) - gaps_s[:1].sum()
    times = pl.Series("event_time", [first + timedelta(seconds=int(o)) for o in offsets_s])
    return frame.select(
        (pl.lit("wdbc-") + pl.col("row").cast(pl.String).str.zfill(3)).alias("sample_id"),
        *([times.cast(pl.Datetime("us", "UTC"))] if event_time else []),
        *cancer_feature_columns(),
        pl.Series("malignant", labels, dtype=pl.Int64),
    )


def _cancer_measure(column: str) -> str:
    """``mean_radius``, ``radius_error``, ``worst_radius`` -> ``radius``."""
    return column.removeprefix("mean_").removeprefix("worst_").removesuffix("_error")


# The wine dataset: scikit-learn's wine recognition data (178 wines of three Piedmont cultivars), bundled in
# its wheel. Labels are the cultivars' names, columns as scikit-learn names them (one has slashes).
WINE_CULTIVARS = ("barolo", "grignolino", "barbera")


@functools.cache
def _wine_source() -> pl.DataFrame:
    from sklearn.datasets import load_wine

    bunch = load_wine(as_frame=True)
    labels = pl.Series("cultivar", [WINE_CULTIVARS[i] for i in bunch.target.to_numpy()])
    return pl.from_pandas(bunch.data).with_columns(labels)


def wine(*, rows: int | None = None, seed: int = 0) -> pl.DataFrame:
    """A batch of the ``wine`` dataset (``deploy/config/datasets/wine.yaml``, a multiclass task): all 178
    wines (``rows=None``) or a seeded sample of ``rows`` distinct ones."""
    source = _wine_source()
    if rows is None:
        return source
    if not 0 <= rows <= source.height:
        raise ValueError(f"rows must be in [0, {source.height}] (the dataset's size), got {rows}")
    return source.sample(n=rows, seed=seed)


def wine_record(index: int = 0) -> dict[str, object]:
    """One wine's measurements, as a prediction request names them (row 0 is a barolo)."""
    return _wine_source().drop("cultivar").row(index, named=True)
