"""Stream names: one Redis stream per event type. The only place a stream name is spelled."""

from typing import Final

INGEST_REQUESTED: Final = "ingest.requested"
DATA_INGESTED: Final = "data.ingested"
FEATURES_READY: Final = "features.ready"
RETRAIN_REQUESTED: Final = "retrain.requested"
MODEL_TRAINED: Final = "model.trained"
MODEL_PROMOTED: Final = "model.promoted"
MODEL_REJECTED: Final = "model.rejected"
PREDICTIONS: Final = "predictions"
LABELS: Final = "labels"
DRIFT_DETECTED: Final = "drift.detected"
DEADLETTER: Final = "deadletter"

ALL_STREAMS: Final = (
    INGEST_REQUESTED,
    DATA_INGESTED,
    FEATURES_READY,
    RETRAIN_REQUESTED,
    MODEL_TRAINED,
    MODEL_PROMOTED,
    MODEL_REJECTED,
    PREDICTIONS,
    LABELS,
    DRIFT_DETECTED,
    DEADLETTER,
)
