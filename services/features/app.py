"""Features service wiring: ``data.ingested`` in, ``features.ready`` out."""

from __future__ import annotations

from starlette.applications import Starlette

from services.features import consumers
from services.features.deps import FeaturesDeps
from shared import events
from shared.runtime.service import ServiceRuntime
from shared.runtime.settings import MeshSettings


def create_app(settings: MeshSettings | None = None) -> Starlette:
    runtime = ServiceRuntime("features", settings)
    deps = FeaturesDeps.of(runtime)
    runtime.consume(events.DATA_INGESTED, consumers.on_data_ingested, deps)
    return runtime.asgi(deps=deps)
