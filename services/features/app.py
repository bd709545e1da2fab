"""Features service wiring: ``data.ingested`` in, ``features.ready`` out; data retention if it is set."""

from __future__ import annotations

from starlette.applications import Starlette

from services.features import consumers
from services.features.deps import FeaturesDeps
from services.features.pruning import prune_once
from shared import events
from shared.runtime.periodic import Periodic
from shared.runtime.service import ServiceRuntime
from shared.runtime.settings import MeshSettings


def create_app(settings: MeshSettings | None = None) -> Starlette:
    runtime = ServiceRuntime("features", settings)
    deps = FeaturesDeps.of(runtime)
    runtime.consume(events.DATA_INGESTED, consumers.on_data_ingested, deps)
    if deps.settings.retention_days is not None:
        pruner = Periodic("pruning", deps.settings.retention_interval_s, lambda: prune_once(deps), deps.log)
        runtime.on_startup(pruner.start)
        runtime.on_shutdown(pruner.stop)
    return runtime.asgi(deps=deps)
