"""Serving's own Prometheus metrics, beside the request metrics BentoML exports on the same /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MODEL_LOADS = Counter("mesh_model_loads_total", "Model versions loaded", ["outcome"])
MODEL_SWAP_SECONDS = Histogram(
    "mesh_model_swap_duration_seconds", "Download, load and warm-up of a new version"
)
MODEL_VERSION = Gauge("mesh_model_version_serving", "Model version currently served", ["model"])
PREDICTIONS = Counter("mesh_predictions_total", "Records predicted", ["model", "version"])
PREDICTIONS_DROPPED = Counter("mesh_prediction_records_dropped_total", "Sampled records dropped (queue full)")
