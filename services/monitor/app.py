"""Monitor service wiring: ``predictions`` and ``labels`` in; ``drift.detected``, feedback batches and
``retrain.requested`` out; per model ``GET /drift/{model}`` and its report for people, ``POST /labels``.

Every model with a ``monitor/<dataset>.yaml`` is watched. The state lives in Redis, so replicas share the
consumer group's work and a restarted monitor carries on where it was."""

from __future__ import annotations

from fastapi import FastAPI

from services.monitor import consumers, routes
from services.monitor.deps import MonitorDeps
from services.monitor.models import MonitoredModels
from services.monitor.references import References
from services.monitor.schemas import DESCRIPTION
from services.monitor.state import MonitorStore
from services.monitor.ticker import window_ticker
from shared import events
from shared.runtime.mlflow_client import mlflow_client
from shared.runtime.service import ServiceRuntime
from shared.runtime.settings import MeshSettings


def create_app(settings: MeshSettings | None = None) -> FastAPI:
    runtime = ServiceRuntime("monitor", settings)
    settings = runtime.settings
    deps = MonitorDeps.of(
        runtime,
        models=MonitoredModels(settings.config_dir),
        store=MonitorStore(lambda: runtime.bus.redis),
        references=References(mlflow_client(settings)),
    )
    runtime.consume_batch(events.PREDICTIONS, consumers.on_predictions, deps)
    runtime.consume_batch(events.LABELS, consumers.on_labels, deps)
    runtime.consume(events.DATA_INGESTED, consumers.on_data_ingested, deps)
    runtime.consume(events.MODEL_PROMOTED, consumers.on_promoted, deps)
    # Batched: a flood of bad events letters thousands, of which only a refused feedback batch matters here.
    runtime.consume_batch(events.DEADLETTER, consumers.on_dead_letters, deps)
    ticker = window_ticker(deps)
    runtime.on_startup(ticker.start)
    runtime.on_shutdown(ticker.stop)
    runtime.require_http("mlflow", f"{settings.effective_mlflow_uri}/health")
    return runtime.asgi(routes.router, deps=deps, description=DESCRIPTION)
