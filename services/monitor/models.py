"""The models the monitor watches: one per ``monitor/<dataset>.yaml`` under the config dir, found by the
model name its records carry. A model declared while the monitor runs is picked up on first sight."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from services.monitor.policy import MonitorConfig, load_monitor_config
from shared.ml.datasets import DatasetSchema, load_schema
from shared.ml.features import FeatureSpec, load_feature_spec
from shared.runtime.logging import get_logger

log = get_logger("mesh.monitor")

RESCAN_AFTER_S = 5.0  # records of an unmonitored model must not re-read the config dir on every batch


@dataclass(frozen=True)
class MonitoredModel:
    """One model's monitor configuration, its dataset's schema and the inputs its records carry."""

    config: MonitorConfig
    spec: FeatureSpec
    schema: DatasetSchema
    prediction_schema: dict[str, pl.DataType] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        inputs = {c: self.schema.polars_schema[c] for c in self.spec.input_columns}
        prediction_schema: dict[str, pl.DataType] = {
            "request_id": pl.String(),
            "model_version": pl.String(),
            "prediction": pl.Int64(),
            "predicted_at": pl.Datetime("us", "UTC"),
            **inputs,
        }
        object.__setattr__(self, "prediction_schema", prediction_schema)

    @property
    def name(self) -> str:
        return self.config.model_name

    @property
    def dataset(self) -> str:
        return self.config.dataset

    @classmethod
    def for_dataset(cls, config_dir: Path, dataset: str) -> MonitoredModel:
        return cls(
            load_monitor_config(config_dir, dataset),
            load_feature_spec(config_dir, dataset),
            load_schema(config_dir, dataset),
        )


class MonitoredModels:
    """Every model with a monitor config, by model name; the config dir is read again on a miss."""

    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        self._models: dict[str, MonitoredModel] = {}
        self._lock = threading.Lock()
        self._scanned_at = 0.0
        self.rescan()

    def rescan(self) -> None:
        found: dict[str, MonitoredModel] = {}
        for path in sorted((self.config_dir / "monitor").glob("*.yaml")):
            try:
                model = MonitoredModel.for_dataset(self.config_dir, path.stem)
            except Exception as exc:  # one bad file must not blind the monitor to the others
                log.error("monitor config refused", file=str(path), error=str(exc))
                continue
            found[model.name] = model
        with self._lock:
            self._models = found
            self._scanned_at = time.monotonic()

    def get(self, name: str) -> MonitoredModel | None:
        if name not in self._models and time.monotonic() - self._scanned_at >= RESCAN_AFTER_S:
            self.rescan()
        return self._models.get(name)

    def all(self) -> list[MonitoredModel]:
        return list(self._models.values())

    @property
    def join_capacity(self) -> int:
        """Predictions kept waiting for labels, all models together (labels do not name their model)."""
        return sum(m.config.join_capacity for m in self._models.values()) or 20_000
