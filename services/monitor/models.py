"""The models the monitor watches: one per ``monitor/<dataset>.yaml`` under the config dir, found by the
model name its records carry. A model declared while the monitor runs is picked up on first sight."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from shared.ml.config_files import ConfigProblem, InvalidConfig
from shared.ml.datasets import DatasetSchema, load_schema
from shared.ml.features import FeatureSpec, load_feature_spec
from shared.ml.modeling import load_model_config
from shared.ml.monitoring import MonitorConfig, load_monitor_config
from shared.ml.tasks import DEFAULT_LIVE_METRIC, LIVE_METRICS
from shared.runtime.logging import get_logger

log = get_logger("mesh.monitor")

RESCAN_AFTER_S = 5.0  # records of an unmonitored model must not re-read the config dir on every batch


@dataclass(frozen=True)
class MonitoredModel:
    """One model's monitor configuration, its dataset's schema and the inputs its records carry."""

    config: MonitorConfig
    spec: FeatureSpec
    schema: DatasetSchema
    task: str = "binary"
    prediction_schema: dict[str, pl.DataType] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        inputs = {c: self.schema.polars_schema[c] for c in self.spec.input_columns}
        prediction_schema: dict[str, pl.DataType] = {
            "request_id": pl.String(),
            "model_version": pl.String(),
            "prediction": self.label_dtype,
            "probability": pl.Float64(),
            "predicted_at": pl.Datetime("us", "UTC"),
            **inputs,
        }
        object.__setattr__(self, "prediction_schema", prediction_schema)

    @property
    def label_dtype(self) -> pl.DataType:
        """What a label (and a predicted label or value) is read as: the target's type; a number for
        regression."""
        if self.task == "regression":
            return pl.Float64()
        return self.schema.polars_schema[self.spec.target]

    @property
    def positive_label(self) -> str | None:
        """A binary model's positive class as text (labels are compared as text), as scikit-learn orders
        the classes: the second of the sorted categories, True, or the larger integer."""
        if self.task != "binary":
            return None
        column = self.schema.column(self.spec.target)
        if column.allowed and len(column.allowed) == 2:
            return sorted(column.allowed)[1]
        if column.dtype == "bool":
            return "true"
        if column.dtype == "int" and column.max is not None:
            return str(int(column.max))
        return None

    @property
    def output_column(self) -> str:
        """The column of a prediction record whose drift is the drift of the model's outputs."""
        return "probability" if self.task == "binary" else "prediction"

    @property
    def name(self) -> str:
        return self.config.model_name

    @property
    def dataset(self) -> str:
        return self.config.dataset

    @classmethod
    def for_dataset(cls, config_dir: Path, dataset: str) -> MonitoredModel:
        task = load_model_config(config_dir, dataset).task
        config = load_monitor_config(config_dir, dataset)
        if config.performance.metric is None:
            performance = config.performance.model_copy(update={"metric": DEFAULT_LIVE_METRIC[task]})
            config = config.model_copy(update={"performance": performance})
        elif config.performance.metric not in LIVE_METRICS[task]:
            path = str(config_dir / "monitor" / f"{dataset}.yaml")
            known = ", ".join(LIVE_METRICS[task])
            message = f"{config.performance.metric!r} is not a live metric of a {task} model ({known})"
            raise InvalidConfig([ConfigProblem(path, "performance.metric", message)])
        return cls(config, load_feature_spec(config_dir, dataset), load_schema(config_dir, dataset), task)


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
