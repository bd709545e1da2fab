"""Ingest service wiring: HTTP upload and snapshot listing, the ``ingest.requested`` consumer."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from services.ingest import consumers, routes
from services.ingest.deps import IngestDeps
from shared import events
from shared.ml.snapshots import SnapshotStore
from shared.runtime.service import ServiceRuntime
from shared.runtime.settings import MeshSettings


def create_app(settings: MeshSettings | None = None) -> Starlette:
    runtime = ServiceRuntime("ingest", settings)
    deps = IngestDeps.of(runtime, store=SnapshotStore(runtime.settings.effective_data_root))
    runtime.consume(events.INGEST_REQUESTED, consumers.on_ingest_requested, deps)
    runtime.readiness_check(deps.config_problem)
    return runtime.asgi(
        [
            Route("/datasets/{name}/batches", routes.upload_batch, methods=["POST"]),
            Route("/datasets/{name}/snapshots", routes.list_snapshots, methods=["GET"]),
        ],
        deps=deps,
    )
