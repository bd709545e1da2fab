"""The monitor as its consumers see it: a config dir whose monitor config a test tunes, the deps the
service would build over a real bus, and the demo's traffic as prediction and label events."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from mlflow.tracking import MlflowClient
from opentelemetry import trace

from services.monitor.deps import MonitorDeps
from services.monitor.models import MonitoredModels
from services.monitor.references import Reference, References
from services.monitor.state import MonitorStore
from shared import events
from shared.bus import MeshBus
from shared.events import Envelope, LabelObserved, PredictionMade, new_event, utcnow
from shared.ml.features import FeatureSpec
from shared.ml.monitoring import MonitorConfig, load_monitor_config
from shared.runtime.logging import get_logger
from shared.runtime.settings import MeshSettings
from tests.support.data import CONFIG_DIR

MODEL = "churn-demo"  # the model deploy/config/monitor/demo.yaml watches
VERSION = "1"


def tuned_config_dir(root: Path, *, model_name: str = MODEL, **sections: dict[str, Any]) -> Path:
    """A copy of deploy/config whose demo monitor config watches ``model_name`` and has ``sections``
    (window=..., retrain=...) updated."""
    target = root / "config"
    shutil.copytree(CONFIG_DIR, target, dirs_exist_ok=True)
    demo = load_monitor_config(CONFIG_DIR, "demo")
    tuned = {name: getattr(demo, name).model_copy(update=fields) for name, fields in sections.items()}
    config = demo.model_copy(update={**tuned, "model_name": model_name})
    (target / "monitor" / "demo.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return target


def monitor_config(config_dir: Path) -> MonitorConfig:
    return load_monitor_config(config_dir, "demo")


def monitor_deps(
    settings: MeshSettings, bus: MeshBus, config_dir: Path, profile: dict[str, Any]
) -> MonitorDeps:
    """The deps the monitor service builds, with version 1's reference already known (no MLflow asked)."""
    uri = settings.effective_mlflow_uri
    references = References(MlflowClient(tracking_uri=uri, registry_uri=uri))
    references.set(
        MODEL, Reference(VERSION, profile, promoted_metrics={"accuracy": 0.9}, feature_set_id="fs")
    )
    return MonitorDeps(
        settings=settings,
        bus=bus,
        tracer=trace.get_tracer("test"),
        log=get_logger("mesh.monitor"),
        models=MonitoredModels(config_dir),
        store=MonitorStore(lambda: bus.redis),
        references=references,
    )


def predictions(
    frame: pl.DataFrame, spec: FeatureSpec, *, start: int = 0, version: str = VERSION, model: str = MODEL
) -> list[Envelope[PredictionMade]]:
    """One prediction event per row (request ids ``req-<n>`` from ``start``), alternating classes."""
    return [
        new_event(
            events.PREDICTIONS,
            PredictionMade(
                request_id=f"req-{start + i}",
                model_name=model,
                model_version=version,
                features=row,
                prediction=(start + i) % 2,
                predicted_at=utcnow(),
            ),
        )
        for i, row in enumerate(frame.select(spec.input_columns).iter_rows(named=True))
    ]


def labels(predicted: list[Envelope[PredictionMade]], *, wrong: bool) -> list[Envelope[LabelObserved]]:
    """A label per prediction: the predicted class, or (``wrong``) the other one."""
    return [
        new_event(
            events.LABELS,
            LabelObserved(
                request_id=p.payload.request_id,
                label=1 - p.payload.prediction if wrong else p.payload.prediction,
                observed_at=utcnow(),
            ),
        )
        for p in predicted
    ]
