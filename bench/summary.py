"""Benchmark summary: each figure of the latest run of every benchmark beside its baseline, in markdown.

Reads the newest ``bench/results/<benchmark>-<UTC time>.json`` of each benchmark (as written by
``bench.report.write_result``) and writes ``bench/results/SUMMARY.md``: one table of figures (value,
baseline measured in the same run, ratio = value / baseline, the goal and whether it is met), then where
each figure comes from (file, time, commit, machine). ``render_summary`` builds the markdown from result
documents and reads nothing itself.

Usage: ``python -m bench.summary [--results bench/results]``; the last step of ``make bench``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.report import RESULTS_DIR, commit, machine

SUMMARY_NAME = "SUMMARY.md"
# The order of the table; benchmarks not listed here come after, by name.
KNOWN = ("event_to_live", "serving", "bus", "features", "drift", "footprint")


@dataclass(frozen=True)
class Figure:
    """One line of the summary: ``value`` beside ``baseline`` (same run, same unit), and the goal."""

    name: str
    unit: str
    value: float | None
    baseline: float | None = None
    baseline_name: str = ""
    goal: str = ""
    met: bool | None = None
    note: str = ""
    count: bool = False  # a count of things: shown without decimals

    def text(self, number: float) -> str:
        """``number`` in this figure's unit (a count without decimals)."""
        shown = f"{number:,.0f}" if self.count else _format(number)
        return f"{shown} {self.unit}".rstrip()

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline


def _get(document: Mapping[str, Any], *path: str) -> Any:
    """``document[path[0]][path[1]]...``, or None where any step is missing."""
    node: Any = document
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _scaled(value: Any, factor: float) -> float | None:
    number = _number(value)
    return None if number is None else number * factor


# --- one extractor per benchmark: its JSON shape -> figures ---------------------------------------------


def event_to_live_figures(doc: Mapping[str, Any]) -> list[Figure]:
    if doc.get("promoted") is False:
        return [
            Figure(
                "upload -> new version serving", "s", None, goal="the gate promotes it", met=False,
                note=f"rejected by the gate: {'; '.join(doc.get('rejection_reasons') or []) or '?'}",
            )
        ]  # fmt: skip
    rows = _get(doc, "rows", "measured")
    seconds = doc.get("seconds") or {}
    in_process = _number(_get(doc, "baseline", "seconds", "total"))
    goal = _number(doc.get("goal_orchestration_s"))
    orchestration = _number(seconds.get("orchestration"))
    return [
        Figure(
            f"upload -> new version serving ({rows:,} rows)" if isinstance(rows, int) else
            "upload -> new version serving",
            "s", _number(seconds.get("total")), in_process, "in-process features + fit + evaluate",
        ),
        Figure(
            "compute in the mesh (features.build + training.fit + training.evaluate)", "s",
            _number(seconds.get("compute_without_swap")), in_process, "the same steps in-process",
        ),
        Figure("serving.swap (load + warm-up)", "s", _number(_get(doc, "seconds", "spans", "serving.swap"))),
        Figure(
            "orchestration (total - compute)", "s", orchestration,
            goal=f"<= {goal:g} s" if goal is not None else "",
            met=None if goal is None or orchestration is None else orchestration <= goal,
        ),
    ]  # fmt: skip


def at_least(value: float | None, baseline: float | None, bound: float | None) -> bool | None:
    """value / baseline >= bound (None if any is unknown)."""
    return None if bound is None or value is None or not baseline else value / baseline >= bound


def at_most(value: float | None, baseline: float | None, bound: float | None) -> bool | None:
    """value / baseline <= bound (None if any is unknown)."""
    return None if bound is None or value is None or not baseline else value / baseline <= bound


def serving_figures(doc: Mapping[str, Any]) -> list[Figure]:
    goal = _number(doc.get("goal_ratio"))
    goal_p99 = _number(doc.get("goal_p99_ratio"))
    servers = doc.get("servers") or {}

    def server(name: str, key: str) -> float | None:
        return _number(_get(servers, name, key))

    throughput, bare = server("bentoml", "requests_per_s"), server("bare_uvicorn", "requests_per_s")
    p99, bare_p99 = server("bentoml", "p99_ms"), server("bare_uvicorn", "p99_ms")
    figures = [
        Figure(
            "POST /predict throughput", "req/s", throughput, bare, "bare uvicorn",
            goal=f"ratio >= {goal:g}" if goal is not None else "", met=at_least(throughput, bare, goal),
        ),
        Figure(
            "POST /predict latency p50", "ms", server("bentoml", "p50_ms"), server("bare_uvicorn", "p50_ms"),
            "bare uvicorn",
        ),
        Figure(
            "POST /predict latency p99", "ms", p99, bare_p99, "bare uvicorn",
            goal=f"ratio <= {goal_p99:g}" if goal_p99 is not None else "",
            met=at_most(p99, bare_p99, goal_p99),
        ),
    ]  # fmt: skip
    unbatched = server("bentoml_unbatched", "requests_per_s")
    if unbatched is not None:
        figures.append(
            Figure("POST /predict throughput, batching off", "req/s", unbatched, bare, "bare uvicorn")
        )
    batching = doc.get("batching")
    if isinstance(batching, Mapping):
        goals = batching.get("goal") or {}
        for concurrency, key, goal_key, label, unit in (
            ("64", "requests_per_s", "ratio_requests_per_s_at_64", "throughput", "req/s"),
            ("1", "p50_ms", "ratio_p50_at_1", "latency p50", "ms"),
        ):
            on = _number(_get(batching, "by_concurrency", concurrency, "bentoml", key))
            off = _number(_get(batching, "by_concurrency", concurrency, "bentoml_unbatched", key))
            bound = _number(goals.get(goal_key))
            check, sign = (at_least, ">=") if key == "requests_per_s" else (at_most, "<=")
            figures.append(
                Figure(
                    f"adaptive batching, concurrency {concurrency}: {label}", unit, on, off, "batching off",
                    goal=f"ratio {sign} {bound:g}" if bound is not None else "", met=check(on, off, bound),
                )
            )  # fmt: skip
    two_workers = server("bentoml_2_workers", "requests_per_s")
    if two_workers is not None:
        figures.append(
            Figure("POST /predict throughput, 2 workers", "req/s", two_workers, throughput, "1 worker")
        )
    for key, where in (("hot_swap", ""), ("hot_swap_two_workers", ", 2 workers")):
        figures += _swap_figures(doc.get(key), where)
    return figures


def _swap_figures(swap: Any, where: str) -> list[Figure]:
    """The figures of one hot swap under load (``where``: which server, for the figures' names)."""
    figures: list[Figure] = []
    if isinstance(swap, Mapping) and "skipped" in swap:
        figures.append(Figure(f"hot swap under load{where}", "", None, note=str(swap["skipped"])))
    elif isinstance(swap, Mapping):
        failed = _number(swap.get("failed"))
        rate = _number(swap.get("rate"))
        figures.append(
            Figure(
                f"hot swap under load{where} ({rate:g} req/s paced): failed requests" if rate else
                f"hot swap under load{where}: failed requests", "", failed, goal="0",
                met=None if failed is None else failed == 0, count=True,
            )
        )  # fmt: skip
        swap_p99, steady_p99 = _number(_get(swap, "swap", "p99_ms")), _number(_get(swap, "steady", "p99_ms"))
        bound = _number(_get(swap, "goal", "p99_ratio"))
        figures.append(
            Figure(
                f"hot swap under load{where}: p99 while the new version loads", "ms", swap_p99, steady_p99,
                "steady, same load", goal=f"ratio <= {bound:g}" if bound is not None else "",
                met=at_most(swap_p99, steady_p99, bound),
            )
        )  # fmt: skip
        figures.append(
            Figure(f"hot swap under load{where}: promotion -> first answer by it", "s",
                   _number(swap.get("promotion_to_first_new_answer_s")))
        )  # fmt: skip
    return figures


def bus_figures(doc: Mapping[str, Any]) -> list[Figure]:
    goal = _number(doc.get("goal_ratio"))
    figures = []
    for key, label in (("one_hop", "one hop (consume, emit, ack)"), ("batch_consume", "batch consume")):
        value = _number(_get(doc, "events_per_s", key, "mesh_bus"))
        baseline = _number(_get(doc, "events_per_s", key, "raw_redis_py"))
        figures.append(
            Figure(
                f"{label} throughput", "events/s", value, baseline, "raw redis-py",
                goal=f"ratio >= {goal:g}" if goal is not None else "",
                met=at_least(value, baseline, goal),
            )
        )  # fmt: skip
    ahead = _number(_get(doc, "events_per_s", "one_hop", "raw_redis_py_read_ahead"))
    if ahead is not None:
        figures.insert(
            1,
            Figure(
                "one hop throughput, against a hand-written read-ahead", "events/s",
                _number(_get(doc, "events_per_s", "one_hop", "mesh_bus")), ahead,
                f"raw redis-py, {_get(doc, 'events_per_s', 'one_hop', 'read_ahead')} entries a read",
            ),
        )  # fmt: skip
    letters = _number(_get(doc, "events_per_s", "dead_letter", "mesh_bus"))
    letters_goal = _number(doc.get("goal_dead_letters_per_s"))
    figures.append(
        Figure(
            "malformed events dead-lettered", "events/s", letters,
            _number(_get(doc, "events_per_s", "dead_letter", "raw_redis_py")), "raw redis-py, batched",
            goal=f">= {letters_goal:,.0f} events/s" if letters_goal is not None else "",
            met=None if letters_goal is None or letters is None else letters >= letters_goal,
        )
    )  # fmt: skip
    limit = _number(doc.get("idle_limit_per_s"))
    idle = _number(_get(doc, "idle_calls_per_s_per_stream", "mesh_bus"))
    figures.append(
        Figure(
            "idle polling per consumed stream", "calls/s", idle,
            _number(_get(doc, "idle_calls_per_s_per_stream", "faststream_defaults")), "FastStream defaults",
            goal=f"<= {limit:g} calls/s" if limit is not None else "",
            met=None if limit is None or idle is None else idle <= limit,
        )
    )  # fmt: skip
    return figures


def features_figures(doc: Mapping[str, Any]) -> list[Figure]:
    goal = _number(doc.get("goal_speedup"))
    figures = []
    sizes = doc.get("sizes") or {}
    for rows, sides in sorted(sizes.items(), key=lambda item: int(item[0]) if item[0].isdigit() else 0):
        label = f"{int(rows):,}" if rows.isdigit() else rows
        polars = _scaled(_get(sides, "polars", "median_s"), 1000)
        pandas = _scaled(_get(sides, "pandas", "median_s"), 1000)
        speedup = None if polars is None or pandas is None or polars == 0 else pandas / polars
        figures.append(
            Figure(
                f"fit + transform, {label} rows (polars)", "ms", polars, pandas, "pandas (categories)",
                goal=f"ratio <= {1 / goal:.3g} (>= {goal:g}x faster)" if goal else "",
                met=None if goal is None or speedup is None else speedup >= goal,
            )
        )  # fmt: skip
        figures.append(
            Figure(
                f"fit + transform, {label} rows (polars)", "ms", polars,
                _scaled(_get(sides, "pandas_plain", "median_s"), 1000), "pandas (plain strings)",
            )
        )  # fmt: skip
    return figures


def drift_figures(doc: Mapping[str, Any]) -> list[Figure]:
    scale = doc.get("scale")
    if not isinstance(scale, Mapping):
        return []
    goal_s = _number(_get(scale, "goals", "seconds"))
    goal_mb = _number(_get(scale, "goals", "mb"))
    rows = scale.get("rows")
    label = f"{rows:,} rows" if isinstance(rows, int) else "one window"
    baseline = _number(_get(scale, "seconds", "baseline"))
    figures = []
    for key, name in (("window_drift", "window_drift"), ("evaluate_total", "window_drift + chart_series")):
        value = _number(_get(scale, "seconds", key))
        figures.append(
            Figure(
                f"{name}, {label}", "s", value, baseline, "numpy/scipy",
                goal=f"<= {goal_s:g} s" if goal_s is not None else "",
                met=None if goal_s is None or value is None else value <= goal_s,
            )
        )  # fmt: skip
    power: Mapping[str, Any] = doc.get("power") or {}
    for window, rates in sorted(
        ((w, _get(power, "by_window_rows", w, "rates")) for w in (_get(power, "by_window_rows") or {})),
        key=lambda item: int(item[0]) if item[0].isdigit() else 0,
    ):
        window_label = f"{int(window):,}-row window" if window.isdigit() else f"{window} window"
        for fixed, key, what in (
            ("ks", "detect_numeric_shift", "0.2 sd mean shift fires"),
            ("psi", "detect_categorical_shift", "+10-point category share fires"),
            (None, "false_alarm_per_column", "false alarms per unshifted column"),
        ):
            value = _number(_get(rates, "policy_significance", key))
            alarm = key == "false_alarm_per_column"
            figures.append(
                Figure(
                    f"power, {window_label}: {what} (the policy's size-aware test)", "", value,
                    _number(_get(rates, f"policy_{fixed}", key)) if fixed else None,
                    f"the policy's fixed {fixed.upper()} threshold" if fixed else "",
                    goal="0" if alarm else "every window",
                    met=None if value is None else (value == 0 if alarm else value >= 1.0),
                )
            )  # fmt: skip
    peak = _number(_get(scale, "peak_mb", "product"))
    figures.append(
        Figure(
            f"drift peak memory, {label}", "MB", peak, _number(_get(scale, "peak_mb", "baseline")),
            "numpy/scipy", goal=f"<= {goal_mb:g} MB" if goal_mb is not None else "",
            met=None if goal_mb is None or peak is None else peak <= goal_mb,
        )
    )  # fmt: skip
    return figures


def footprint_figures(doc: Mapping[str, Any]) -> list[Figure]:
    goals = doc.get("goals") or {}
    figures = []
    for key, label, unit in (
        ("processes", "idle local stack: processes", ""),
        ("rss_mb", "idle local stack: memory (RSS)", "MB"),
        ("cpu_percent_of_one_core", "idle local stack: CPU", "% of a core"),
    ):
        value = _number(_get(doc, "stack", key))
        goal = _number(goals.get(key))
        figures.append(
            Figure(
                label, unit, value, _number(_get(doc, "mlflow_server_defaults", key)),
                "MLflow server alone, its defaults", goal=f"<= {goal:g}" if goal is not None else "",
                met=None if goal is None or value is None else value <= goal, count=key == "processes",
            )
        )  # fmt: skip
    return figures


EXTRACTORS: dict[str, Callable[[Mapping[str, Any]], list[Figure]]] = {
    "footprint": footprint_figures,
    "event_to_live": event_to_live_figures,
    "serving": serving_figures,
    "bus": bus_figures,
    "features": features_figures,
    "drift": drift_figures,
}


# --- reading and rendering ------------------------------------------------------------------------------


def latest_results(directory: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """Per benchmark, the newest result document under ``directory``: ``{benchmark: (file name, doc)}``.

    Newest by the document's ``at`` (ISO UTC), then by file name; unreadable files are skipped."""
    latest: dict[str, tuple[str, dict[str, Any]]] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(document, dict) or not isinstance(document.get("benchmark"), str):
            continue
        name = document["benchmark"]
        key = (str(document.get("at", "")), path.name)
        if name not in latest or key > (str(latest[name][1].get("at", "")), latest[name][0]):
            latest[name] = (path.name, document)
    return latest


def _format(value: float | None) -> str:
    if value is None:
        return "-"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _machine_text(machine_info: Any) -> str:
    if not isinstance(machine_info, Mapping):
        return "?"
    parts = []
    if machine_info.get("cpus") is not None:
        parts.append(f"{machine_info['cpus']} CPUs")
    if machine_info.get("python"):
        parts.append(f"Python {machine_info['python']}")
    if machine_info.get("platform"):
        parts.append(str(machine_info["platform"]))
    return ", ".join(parts) or "?"


def _order(name: str) -> tuple[int, str]:
    return (KNOWN.index(name) if name in KNOWN else len(KNOWN), name)


def render_summary(
    results: Mapping[str, tuple[str, Mapping[str, Any]]],
    *,
    generated_at: str,
    commit: str,
    machine: Mapping[str, Any],
) -> str:
    """The markdown summary of ``results`` (``{benchmark: (file name, document)}``, as
    :func:`latest_results` returns), written at ``generated_at`` on ``commit`` and ``machine``."""
    lines = [
        "# Benchmark summary",
        "",
        f"Written {generated_at} at commit `{commit}` on {_machine_text(machine)}, by "
        "`python -m bench.summary` (last step of `make bench`) from the latest result of each benchmark "
        "under `bench/results/`.",
        "Each baseline is measured in the same run as its figure; ratio = figure / baseline.",
        "",
    ]
    names = sorted(results, key=_order)
    if not names:
        lines += ["No results yet: run `make bench`.", ""]
    else:
        lines += [
            "| Benchmark | Figure | Value | Baseline | Ratio | Goal | Met |",
            "|---|---|---:|---:|---:|---|:---:|",
        ]
        for name in names:
            _, document = results[name]
            extractor = EXTRACTORS.get(name)
            figures = extractor(document) if extractor is not None else []
            if not figures:
                lines.append(f"| {_cell(name)} | (no figures summarised; see its JSON) | - | - | - | | |")
            for figure in figures:
                value = figure.text(figure.value) if figure.value is not None else "-"
                if figure.note:
                    value = f"{value} ({figure.note})"
                baseline = (
                    f"{figure.text(figure.baseline)} ({figure.baseline_name})"
                    if figure.baseline is not None
                    else "-"
                )
                ratio = f"{figure.ratio:.3g}" if figure.ratio is not None else "-"
                met = {True: "yes", False: "**no**", None: ""}[figure.met]
                cells = [name, figure.name, value, baseline, ratio, figure.goal, met]
                lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    missing = [name for name in KNOWN if name not in results]
    if missing:
        lines += [f"Not run yet: {', '.join(f'`{m}`' for m in missing)}.", ""]
    if names:
        lines += [
            "## Sources",
            "",
            "| Benchmark | File | Run at (UTC) | Commit | Machine |",
            "|---|---|---|---|---|",
        ]
        for name in names:
            file_name, document = results[name]
            run_commit = str(document.get("commit", "?"))
            if run_commit != commit:
                run_commit += " (not this commit)"
            cells = [
                name, f"`{file_name}`", str(document.get("at", "?")), run_commit,
                _machine_text(document.get("machine")),
            ]  # fmt: skip
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_summary(directory: Path = RESULTS_DIR) -> Path:
    results = latest_results(directory)
    text = render_summary(
        results,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        commit=commit(),
        machine=machine(),
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SUMMARY_NAME
    path.write_text(text)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="where the result JSON files are")
    args = parser.parse_args(argv)
    path = write_summary(args.results)
    print(path.read_text())
    print(f"-> {path}")


if __name__ == "__main__":
    main()
