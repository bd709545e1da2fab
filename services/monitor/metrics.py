"""The monitor's Prometheus metrics (scraped from its ``/metrics``), labelled by model."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from services.monitor.windows import WindowResult

DRIFT_SCORE = Gauge(
    "mesh_drift_score", "Latest drift score per feature and test", ["model", "feature", "test"]
)
WINDOW_PERFORMANCE = Gauge(
    "mesh_window_performance",
    "The monitored metric (accuracy, macro_f1, rmse...) on the latest labelled window",
    ["model", "version", "metric"],
)
DECISIONS = Counter("mesh_monitor_decisions_total", "Trigger policy decisions", ["model", "outcome"])
RETRAINS = Counter("mesh_retrains_triggered_total", "Retrains requested by the monitor", ["model"])


def record_window(result: WindowResult) -> None:
    """One evaluated window: its drift scores, its performance if labelled, and the policy's decision."""
    model = result.model_name
    for feature, tests in result.scores.items():
        for test, score in tests.items():
            DRIFT_SCORE.labels(model, feature, test).set(score)
    if result.performance is not None:
        WINDOW_PERFORMANCE.labels(model, result.model_version, result.performance_metric).set(
            result.performance
        )
    DECISIONS.labels(model, "retrain" if result.decision.retrain else "hold").inc()
