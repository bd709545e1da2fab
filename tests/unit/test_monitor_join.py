"""The monitor's join of late labels with predictions: every labelled request counts once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.monitor.policy import load_monitor_config
from services.monitor.windows import Monitor
from shared.ml.datasets import DatasetSchema
from shared.ml.features import FeatureSpec
from shared.ops.demo_data import EXAMPLE_RECORD
from tests.support.data import CONFIG_DIR


@pytest.fixture
def monitor(schema: DatasetSchema, spec: FeatureSpec) -> Monitor:
    return Monitor(load_monitor_config(CONFIG_DIR, "demo"), spec, schema)


def _predictions(ids: range) -> list[dict[str, Any]]:
    return [
        {
            "request_id": f"r{i}",
            "model_version": "1",
            "prediction": i % 2,
            "predicted_at": datetime(2026, 1, 1, tzinfo=UTC),
            "features": EXAMPLE_RECORD,
        }
        for i in ids
    ]


def _labels(ids: range) -> list[dict[str, Any]]:
    return [{"request_id": f"r{i}", "label": i % 2} for i in ids]


def test_labels_join_their_predictions_whichever_arrives_first(monitor: Monitor) -> None:
    monitor.add_labels(_labels(range(0, 5)), now=0)  # before their predictions
    monitor.add_predictions(_predictions(range(0, 10)), now=0)
    monitor.add_labels(_labels(range(5, 8)), now=0)
    assert sorted(monitor.feedback["request_id"]) == sorted(f"r{i}" for i in range(8))
    assert monitor.unmatched_labels.is_empty()


def test_a_redelivered_label_is_joined_once(monitor: Monitor) -> None:
    monitor.add_predictions(_predictions(range(10)), now=0)
    monitor.add_labels(_labels(range(10)), now=0)
    monitor.add_labels(_labels(range(4)), now=1)
    assert monitor.feedback.height == 10 and monitor.labelled.height == 10
    assert monitor.unmatched_labels.is_empty()


def test_a_redelivered_prediction_is_joined_once(monitor: Monitor) -> None:
    monitor.add_predictions(_predictions(range(10)), now=0)
    monitor.add_predictions(_predictions(range(6)), now=1)
    monitor.add_labels(_labels(range(10)), now=2)
    assert monitor.feedback.height == 10
    assert monitor.feedback["request_id"].n_unique() == 10
