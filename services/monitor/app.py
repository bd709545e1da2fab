"""Monitor service wiring: ``predictions`` and ``labels`` in; ``drift.detected``, feedback batches and
``retrain.requested`` out; ``GET /drift`` and ``GET /drift/report`` for people, ``POST /labels``."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from services.monitor import consumers, routes
from services.monitor.deps import DriftEpisode, MonitorDeps
from services.monitor.ticker import WindowTicker
from services.monitor.windows import Monitor
from shared import events
from shared.runtime.mlflow_client import mlflow_client
from shared.runtime.service import ServiceRuntime
from shared.runtime.settings import MeshSettings


def create_app(settings: MeshSettings | None = None) -> Starlette:
    runtime = ServiceRuntime("monitor", settings)
    settings = runtime.settings
    deps = MonitorDeps.of(
        runtime,
        monitor=Monitor.for_dataset(settings.config_dir, settings.serving_dataset),
        mlflow=mlflow_client(settings),
        episode=DriftEpisode(),
    )
    runtime.consume_batch(events.PREDICTIONS, consumers.on_predictions, deps)
    runtime.consume_batch(events.LABELS, consumers.on_labels, deps)
    runtime.consume(events.DATA_INGESTED, consumers.on_data_ingested, deps)
    runtime.listen(events.MODEL_PROMOTED, consumers.on_promoted, deps)
    ticker = WindowTicker(deps)
    runtime.on_startup(ticker.start)
    runtime.on_shutdown(ticker.stop)
    runtime.require_http("mlflow", f"{settings.effective_mlflow_uri}/health")
    return runtime.asgi(
        [
            Route("/drift", routes.drift),
            Route("/drift/report", routes.drift_report),
            Route("/labels", routes.receive_labels, methods=["POST"]),
        ],
        deps=deps,
    )
