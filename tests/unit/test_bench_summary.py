"""bench.summary: the markdown of SUMMARY.md built from small fake result documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.summary import latest_results, main, render_summary

MACHINE = {"cpus": 2, "python": "3.11.9", "platform": "Linux-test"}


def doc(
    benchmark: str, at: str = "2025-01-01T00:00:00+00:00", commit: str = "abc1234", **figures: Any
) -> dict[str, Any]:
    return {"benchmark": benchmark, "at": at, "commit": commit, "machine": MACHINE, **figures}


SERVING = doc(
    "serving",
    servers={
        "bentoml": {"requests_per_s": 900.0, "p50_ms": 30.0, "p99_ms": 80.0},
        "bare_uvicorn": {"requests_per_s": 1000.0, "p50_ms": 25.0, "p99_ms": 60.0},
    },
    ratio_requests_per_s=0.9,
    goal_ratio=0.9,
    goal_p99_ratio=1.2,
    batching={
        "by_concurrency": {
            "64": {"bentoml": {"requests_per_s": 1500.0}, "bentoml_unbatched": {"requests_per_s": 500.0}},
            "1": {"bentoml": {"p50_ms": 2.4}, "bentoml_unbatched": {"p50_ms": 2.0}},
        },
        "goal": {"ratio_requests_per_s_at_64": 2.0, "ratio_p50_at_1": 1.1},
    },
    hot_swap={
        "rate": 500,
        "failed": 0,
        "steady": {"p99_ms": 20.0},
        "swap": {"p99_ms": 30.0},
        "promotion_to_first_new_answer_s": 0.3,
        "goal": {"failed": 0, "p99_ratio": 2.0},
    },
)
BUS = doc(
    "bus",
    events_per_s={
        "one_hop": {
            "raw_redis_py": 2000.0,
            "raw_redis_py_read_ahead": 4000.0,
            "mesh_bus": 1000.0,
            "ratio": 0.5,
            "read_ahead": 50,
        },
        "batch_consume": {"raw_redis_py": 50000.0, "mesh_bus": 40000.0, "ratio": 0.8},
    },
    idle_calls_per_s_per_stream={"mesh_bus": 3.0, "faststream_defaults": 10.0},
    idle_limit_per_s=2.0,
    goal_ratio=0.8,
)
FEATURES = doc(
    "features",
    goal_speedup=3.0,
    sizes={
        "100000": {
            "polars": {"median_s": 0.01},
            "pandas": {"median_s": 0.04},
            "pandas_plain": {"median_s": 0.08},
        }
    },
)
DRIFT = doc(
    "drift",
    scale={
        "rows": 1_000_000,
        "seconds": {"window_drift": 0.8, "chart_series": 0.4, "evaluate_total": 1.2, "baseline": 2.0},
        "peak_mb": {"product": 300.0, "baseline": 900.0},
        "goals": {"seconds": 1.0, "mb": 600.0},
    },
    power={
        "by_window_rows": {
            "10000": {
                "rates": {
                    "policy_significance": {
                        "detect_numeric_shift": 1.0,
                        "detect_categorical_shift": 0.9,
                        "false_alarm_per_column": 0.0,
                    },
                    "policy_ks": {"detect_numeric_shift": 0.0},
                    "policy_psi": {"detect_categorical_shift": 0.0},
                }
            }
        }
    },
)
EVENT_TO_LIVE = doc(
    "event_to_live",
    rows={"warmup": 2000, "measured": 100_000},
    promoted=True,
    goal_orchestration_s=3.0,
    seconds={
        "total": 20.0,
        "compute": 12.0,
        "compute_without_swap": 10.0,
        "orchestration": 8.0,
        "spans": {"features.build": 2.0, "training.fit": 7.0, "training.evaluate": 1.0, "serving.swap": 2.0},
    },
    baseline={"seconds": {"features": 1.5, "fit": 6.5, "evaluate": 0.5, "total": 8.5}},
)
FOOTPRINT = doc(
    "footprint",
    stack={"processes": 10, "rss_mb": 1800.0, "cpu_percent_of_one_core": 1.5},
    mlflow_server_defaults={"processes": 10, "rss_mb": 2600.0, "cpu_percent_of_one_core": 40.0},
    goals={"processes": 10, "rss_mb": 1536, "cpu_percent_of_one_core": 2.0},
)


def render(*documents: dict[str, Any], commit: str = "abc1234") -> str:
    results = {d["benchmark"]: (f"{d['benchmark']}-x.json", d) for d in documents}
    return render_summary(results, generated_at="2025-01-02T00:00:00+00:00", commit=commit, machine=MACHINE)


def row(text: str, benchmark: str, figure_start: str) -> list[str]:
    """The cells of the first table row of ``benchmark`` whose figure starts with ``figure_start``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) >= 7 and cells[0] == benchmark and cells[1].startswith(figure_start):
            return cells
    raise AssertionError(f"no row {benchmark} / {figure_start!r} in:\n{text}")


def test_each_figure_stands_beside_its_baseline_and_ratio() -> None:
    text = render(SERVING, BUS, FEATURES, DRIFT, EVENT_TO_LIVE, FOOTPRINT)
    assert text.startswith("# Benchmark summary")
    assert "commit `abc1234`" in text and "2 CPUs, Python 3.11.9, Linux-test" in text

    served = row(text, "serving", "POST /predict throughput")
    assert served[2:7] == ["900 req/s", "1,000 req/s (bare uvicorn)", "0.9", "ratio >= 0.9", "yes"]
    tail = row(text, "serving", "POST /predict latency p99")
    assert tail[2:7] == ["80.0 ms", "60.0 ms (bare uvicorn)", "1.33", "ratio <= 1.2", "**no**"]
    busy = row(text, "serving", "adaptive batching, concurrency 64")
    assert busy[2:7] == ["1,500 req/s", "500 req/s (batching off)", "3", "ratio >= 2", "yes"]
    alone = row(text, "serving", "adaptive batching, concurrency 1")
    assert alone[4:7] == ["1.2", "ratio <= 1.1", "**no**"]
    swapped = row(text, "serving", "hot swap under load (500 req/s paced): failed")
    assert swapped[2] == "0" and swapped[5:7] == ["0", "yes"]
    swap_tail = row(text, "serving", "hot swap under load: p99")
    assert swap_tail[2:7] == ["30.0 ms", "20.0 ms (steady, same load)", "1.5", "ratio <= 2", "yes"]
    processes = row(text, "footprint", "idle local stack: processes")
    assert processes[2:7] == ["10", "10 (MLflow server alone, its defaults)", "1", "<= 10", "yes"]
    memory = row(text, "footprint", "idle local stack: memory")
    assert memory[2] == "1,800 MB" and memory[6] == "**no**"
    numeric = row(text, "drift", "power, 10,000-row window: 0.2 sd mean shift fires")
    assert numeric[2:7] == ["1.00", "0 (the policy's fixed KS threshold)", "-", "every window", "yes"]
    assert row(text, "drift", "power, 10,000-row window: +10-point")[6] == "**no**"
    assert row(text, "drift", "power, 10,000-row window: false alarms")[5:7] == ["0", "yes"]
    hop = row(text, "bus", "one hop")
    assert hop[2:7] == ["1,000 events/s", "2,000 events/s (raw redis-py)", "0.5", "ratio >= 0.8", "**no**"]
    by_hand = row(text, "bus", "one hop throughput, against a hand-written read-ahead")
    assert by_hand[3:7] == ["4,000 events/s (raw redis-py, 50 entries a read)", "0.25", "", ""]
    idle = row(text, "bus", "idle polling")
    assert idle[4:7] == ["0.3", "<= 2 calls/s", "**no**"]
    features = row(text, "features", "fit + transform, 100,000 rows")
    assert features[2:4] == ["10.0 ms", "40.0 ms (pandas (categories))"]
    assert features[4] == "0.25" and features[6] == "yes"
    drift = row(text, "drift", "window_drift, 1,000,000 rows")
    assert drift[2:7] == ["0.8 s", "2.00 s (numpy/scipy)", "0.4", "<= 1 s", "yes"]
    assert row(text, "drift", "window_drift + chart_series")[6] == "**no**"
    assert row(text, "drift", "drift peak memory")[6] == "yes"

    total = row(text, "event_to_live", "upload -> new version serving (100,000 rows)")
    assert total[2] == "20.0 s" and total[3].startswith("8.50 s") and total[4] == "2.35"
    orchestration = row(text, "event_to_live", "orchestration")
    assert orchestration[2] == "8.00 s" and orchestration[5:7] == ["<= 3 s", "**no**"]
    assert "Not run yet" not in text


def test_sources_name_file_commit_and_machine_and_flag_another_commit() -> None:
    text = render(SERVING, doc("bus", commit="old0000"), commit="abc1234")
    sources = text[text.index("## Sources") :]
    assert "| serving | `serving-x.json` | 2025-01-01T00:00:00+00:00 | abc1234 | 2 CPUs" in sources
    assert "old0000 (not this commit)" in sources
    assert "Not run yet: `event_to_live`, `features`, `drift`, `footprint`." in text


def test_missing_figures_and_unknown_benchmarks_do_not_break_the_summary() -> None:
    partial = doc("drift", power={"seeds": 3})  # run with --parts power only
    rejected = doc("event_to_live", promoted=False, rejection_reasons=["roc_auc not better"])
    text = render(partial, rejected, doc("mystery", speed=1))
    assert "| drift | (no figures summarised; see its JSON) |" in text
    assert "| mystery | (no figures summarised; see its JSON) |" in text
    assert "rejected by the gate: roc_auc not better" in row(text, "event_to_live", "upload")[2]
    assert row(text, "event_to_live", "upload")[6] == "**no**"


def test_no_results_yet() -> None:
    text = render()
    assert "No results yet" in text and "## Sources" not in text


def test_the_latest_document_of_each_benchmark_is_summarised(tmp_path: Path, capsys: Any) -> None:
    old = doc("serving", at="2025-01-01T00:00:00+00:00", ratio_requests_per_s=0.5)
    new = doc("serving", at="2025-02-01T00:00:00+00:00", ratio_requests_per_s=0.95)
    for name, document in (("serving-20250101T000000Z.json", old), ("serving-20250201T000000Z.json", new)):
        (tmp_path / name).write_text(json.dumps(document))
    (tmp_path / "broken-20250301T000000Z.json").write_text("{not json")
    (tmp_path / "notes.json").write_text(json.dumps({"no": "benchmark"}))

    latest = latest_results(tmp_path)
    assert list(latest) == ["serving"]
    assert latest["serving"][0] == "serving-20250201T000000Z.json"

    main(["--results", str(tmp_path)])
    written = (tmp_path / "SUMMARY.md").read_text()
    assert "`serving-20250201T000000Z.json`" in written and "serving-20250101" not in written
    assert "SUMMARY.md" in capsys.readouterr().out
