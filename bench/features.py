"""Features benchmark: the mesh's polars feature pipeline against the same features written in pandas.

Both sides do what the features service does to a window of raw rows (``build_feature_set``): fit the
learned state (``spend_vs_region``'s mean spend per region) on the frame, then transform the frame into
the model-input matrix. The polars side is the product's own code path, ``FeaturePipeline(spec,
schema).fit(frame).transform(frame)`` with the demo spec from ``deploy/config/features/demo.yaml``, the
same transform serving applies inside every model. The pandas side is the demo spec written by hand in
vectorised pandas, as one would tune it (string columns made categories before mapping them);
``pandas_plain`` is the same code mapping and comparing the strings themselves, as pandas is often
written, measured beside it for reference. Inputs come from ``shared.ops.demo_data.generate`` (the pandas
frame is the polars one converted once, untimed); the outputs of every side must equal polars' (same
columns, order and dtypes, values as float64 arrays within a tolerance) or the run fails.

Rounds alternate (polars, pandas, polars, ...) and the figure per size is the median wall time of
fit + transform; the ratio that matters is ``polars_speedup`` = pandas time / polars time (goal: >= 3).
At 1M rows both sides spend much of their time in the kernel faulting in fresh output memory, and
pandas' rounds are bimodal (numpy asks for huge pages), hence medians over several rounds.

Usage: ``python -m bench.features [--sizes 100000 1000000 --rounds 7 5 --budget 40]``; ``make bench``
runs it.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from rich.console import Console
from rich.table import Table

from bench.report import write_result
from shared.ml.datasets import DatasetSchema, load_schema
from shared.ml.features import FeaturePipeline, FeatureSpec, load_feature_spec
from shared.ops.demo_data import PLANS, REGIONS, generate
from shared.runtime.settings import MeshSettings

DATASET = "demo"
GOAL_SPEEDUP = 3.0
WARMUP_ROWS = 1_000
# Same arithmetic in a different order (group means summed by different engines): last bits may differ.
RTOL, ATOL = 1e-9, 1e-12


@dataclass(frozen=True)
class Contender:
    """One side of the comparison: its input frame, ``fit(frame) -> state``, ``transform(frame, state)``."""

    name: str
    frame: Any
    fit: Callable[[Any], Any]
    transform: Callable[[Any, Any], Any]


@dataclass(frozen=True)
class PandasState:
    """What the pandas side learns from the frame: mean monthly spend per region, and overall."""

    spend_by_region: pd.Series
    spend_mean: float


def pandas_fit(df: pd.DataFrame) -> PandasState:
    # Rounded to 9 decimals like FeaturePipeline.fit, so both sides divide by the same means.
    spend = df["monthly_spend"].astype("float64")
    return PandasState(spend.groupby(df["region"]).mean().round(9), float(spend.mean()))


def pandas_transform(df: pd.DataFrame, state: PandasState, categories: bool = True) -> pd.DataFrame:
    """The demo feature spec by hand: casts, fills, log1p, ratio, null flag, group ratio, one-hot, ordinal.

    ``categories=False`` maps and compares the string columns as they come (``pandas_plain``).
    """
    spend = df["monthly_spend"].astype("float64")
    income = df["income"].astype("float64")
    last_login = df["last_login_days"].astype("float64")
    # Strings as categories first: map and == then work on a few categories, not on every row's string.
    region, plan = (df[c].astype("category") if categories else df[c] for c in ("region", "plan"))
    region_mean = region.map(state.spend_by_region).astype("float64").fillna(state.spend_mean)
    columns: dict[str, pd.Series] = {
        "age": df["age"].astype("float64"),
        "log_income": np.log1p(income),
        "log_tenure": np.log1p(df["tenure_months"].astype("float64")),
        "monthly_spend": spend,
        "support_calls": df["support_calls"].astype("float64"),
        "spend_to_income": spend * 12.0 / (income.abs() + 1.0),
        "last_login_days": last_login.fillna(-1.0),
        "never_logged_in": last_login.isna().astype("float64"),
        "spend_vs_region": spend / (region_mean.abs() + 1e-9),
    }
    for value in REGIONS:
        columns[f"region={value}"] = (region == value).astype("float64")
    ranks = {plan: float(i) for i, plan in enumerate(PLANS)}
    columns["plan"] = plan.map(ranks).astype("float64").fillna(-1.0)
    return pd.DataFrame(columns)


def contenders(spec: FeatureSpec, schema: DatasetSchema, frame: pl.DataFrame) -> list[Contender]:
    """Polars first: rounds alternate in this order."""

    def polars_fit(raw: pl.DataFrame) -> FeaturePipeline:
        return FeaturePipeline(spec, schema).fit(raw)

    def polars_transform(raw: pl.DataFrame, pipeline: FeaturePipeline) -> pl.DataFrame:
        return pipeline.transform(raw)

    def plain_transform(df: pd.DataFrame, state: PandasState) -> pd.DataFrame:
        return pandas_transform(df, state, categories=False)

    df = frame.to_pandas()
    return [
        Contender("polars", frame, polars_fit, polars_transform),
        Contender("pandas", df, pandas_fit, pandas_transform),
        Contender("pandas_plain", df, pandas_fit, plain_transform),
    ]


class OutputMismatch(AssertionError):
    pass


def check_same(polars_out: pl.DataFrame, pandas_out: pd.DataFrame, rows: int, side: str = "pandas") -> None:
    """Raises OutputMismatch unless both produced the same matrix (columns, order, dtypes, values)."""
    if list(pandas_out.columns) != polars_out.columns:
        raise OutputMismatch(
            f"{rows} rows: {side} columns differ: {list(pandas_out.columns)} vs {polars_out.columns}"
        )
    if pandas_out.shape != polars_out.shape or polars_out.height != rows:
        raise OutputMismatch(
            f"{rows} rows: shapes differ: {side} {pandas_out.shape}, polars {polars_out.shape}"
        )
    odd = [
        name
        for name, pd_dtype, pl_dtype in zip(
            polars_out.columns, pandas_out.dtypes, polars_out.dtypes, strict=True
        )
        if pd_dtype != np.float64 or pl_dtype != pl.Float64
    ]
    if odd:
        raise OutputMismatch(f"{rows} rows: columns not float64 in both {side} and polars: {odd}")
    expected, got = polars_out.to_numpy(), pandas_out.to_numpy()
    for i, name in enumerate(polars_out.columns):
        try:
            np.testing.assert_allclose(got[:, i], expected[:, i], rtol=RTOL, atol=ATOL, equal_nan=True)
        except AssertionError as error:
            raise OutputMismatch(
                f"{rows} rows: column {name!r} differs ({side} vs polars): {error}"
            ) from None


def _round(contender: Contender, frame: Any) -> tuple[float, float, Any]:
    gc.collect()
    started = time.perf_counter()
    state = contender.fit(frame)
    fitted = time.perf_counter()
    out = contender.transform(frame, state)
    done = time.perf_counter()
    return fitted - started, done - fitted, out


def measure(
    spec: FeatureSpec, schema: DatasetSchema, rows: int, rounds: int, budget: float, seed: int
) -> dict[str, Any]:
    """Alternating rounds at one size, stopping early once another round would overrun ``budget`` seconds."""
    sides = contenders(spec, schema, generate(rows=rows, seed=seed))
    for side in sides:  # untimed warm-up: first-call costs (thread pools, lazy imports) are not the work
        _round(side, side.frame[:WARMUP_ROWS])
    fit_s: dict[str, list[float]] = {side.name: [] for side in sides}
    transform_s: dict[str, list[float]] = {side.name: [] for side in sides}
    outputs: dict[str, Any] = {}
    started = time.perf_counter()
    for done in range(rounds):
        elapsed = time.perf_counter() - started
        if done and elapsed + elapsed / done > budget:
            break
        for side in sides:
            outputs.pop(side.name, None)  # the last round's output is not kept alive during this one
            fit, transform, outputs[side.name] = _round(side, side.frame)
            fit_s[side.name].append(fit)
            transform_s[side.name].append(transform)
    for side in sides[1:]:
        check_same(outputs["polars"], outputs[side.name], rows, side.name)

    figures: dict[str, Any] = {"rounds": len(fit_s["polars"]), "output_matches": True}
    for side in sides:
        totals = [f + t for f, t in zip(fit_s[side.name], transform_s[side.name], strict=True)]
        median = statistics.median(totals)
        figures[side.name] = {
            "median_s": round(median, 5),
            "fit_median_s": round(statistics.median(fit_s[side.name]), 5),
            "transform_median_s": round(statistics.median(transform_s[side.name]), 5),
            "rows_per_s": round(rows / median),
        }
    polars_s = figures["polars"]["median_s"]
    figures["polars_speedup"] = round(figures["pandas"]["median_s"] / polars_s, 2)
    figures["polars_speedup_vs_plain"] = round(figures["pandas_plain"]["median_s"] / polars_s, 2)
    return figures


def table(sizes: dict[str, dict[str, Any]]) -> Table:
    out = Table(title=f"fit + transform, median ms (goal: polars >= {GOAL_SPEEDUP:g}x pandas)")
    for column in ("rows", "rounds", "polars", "pandas", "plain", "polars rows/s", "speedup", "vs plain"):
        out.add_column(column, justify="right")
    for rows, f in sizes.items():
        out.add_row(
            f"{int(rows):,}", str(f["rounds"]),
            *(f"{f[side]['median_s'] * 1000:.1f}" for side in ("polars", "pandas", "pandas_plain")),
            f"{f['polars']['rows_per_s'] / 1e6:.2f}M",
            f"{f['polars_speedup']:.2f}x", f"{f['polars_speedup_vs_plain']:.2f}x",
        )  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="rows per frame")
    parser.add_argument(
        "--rounds", type=int, nargs="+", default=[7, 5], help="rounds per size (one value: for every size)"
    )
    parser.add_argument("--budget", type=float, default=40.0, help="seconds of rounds per size, at most")
    parser.add_argument("--seed", type=int, default=0, help="demo data seed")
    args = parser.parse_args()
    rounds = args.rounds * len(args.sizes) if len(args.rounds) == 1 else args.rounds
    if len(rounds) != len(args.sizes) or min(rounds) < 1:
        parser.error("--rounds takes one count >= 1, or one per size")

    console = Console(stderr=True)
    config_dir = MeshSettings().config_dir
    spec, schema = load_feature_spec(config_dir, DATASET), load_schema(config_dir, DATASET)
    sizes: dict[str, dict[str, Any]] = {}
    for rows, count in zip(args.sizes, rounds, strict=True):
        sizes[str(rows)] = figures = measure(spec, schema, rows, count, args.budget, args.seed)
        console.print(
            f"{rows:>9,} rows: speedup {figures['polars_speedup']:.2f}x "
            f"(plain {figures['polars_speedup_vs_plain']:.2f}x), outputs match"
        )
    console.print(table(sizes))
    result = {
        "what": "FeaturePipeline fit + transform (demo spec) vs the same demo features in pandas",
        "pandas_plain": "the pandas side mapping the string columns without making them categories",
        "dataset": DATASET,
        "spec_hash": spec.spec_hash,
        "goal_speedup": GOAL_SPEEDUP,
        "versions": {"polars": pl.__version__, "pandas": pd.__version__, "numpy": np.__version__},
        "polars_threads": pl.thread_pool_size(),
        "seed": args.seed,
        "sizes": sizes,
    }
    path = write_result("features", result)
    console.print(f"-> {path}")


if __name__ == "__main__":
    main()
