"""Serving's own Prometheus metrics, beside the request metrics BentoML exports on the same /metrics.

Every model metric carries a ``model`` label: one server holds several models, each swapped on its own.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MODEL_LOADS = Counter("mesh_model_loads_total", "Model versions loaded", ["model", "outcome"])
MODEL_SWAP_SECONDS = Histogram(
    "mesh_model_swap_duration_seconds", "Download, load and warm-up of a new version", ["model"]
)
MODEL_VERSION = Gauge("mesh_model_version_serving", "Model version currently served", ["model"])
MODEL_LOADED = Gauge("mesh_model_loaded", "1 while a version of the model is held in memory", ["model"])
MODEL_EVICTIONS = Counter(
    "mesh_model_evictions_total", "Models unloaded to stay within the loaded-models bound", ["model"]
)
PREDICTIONS = Counter("mesh_predictions_total", "Records predicted", ["model", "version"])
PREDICTIONS_DROPPED = Counter("mesh_prediction_records_dropped_total", "Sampled records dropped (queue full)")
BATCHED_RECORDS = Histogram(
    "mesh_serving_batch_records",
    "Single-record predictions scored together in one model call (adaptive batching)",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
