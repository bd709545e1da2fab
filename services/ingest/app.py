"""Ingest service wiring: HTTP upload and snapshot listing, the ``ingest.requested`` consumer."""

from __future__ import annotations

from fastapi import FastAPI

from services.ingest import consumers, routes
from services.ingest.deps import IngestDeps
from services.ingest.schemas import DESCRIPTION
from shared import events
from shared.ml.snapshots import SnapshotStore
from shared.runtime.service import ServiceRuntime
from shared.runtime.settings import MeshSettings


def create_app(settings: MeshSettings | None = None) -> FastAPI:
    runtime = ServiceRuntime("ingest", settings)
    deps = IngestDeps.of(runtime, store=SnapshotStore(runtime.settings.effective_data_root))
    runtime.consume(events.INGEST_REQUESTED, consumers.on_ingest_requested, deps)
    runtime.readiness_check(deps.config_problem)
    return runtime.asgi(routes.router, deps=deps, description=DESCRIPTION)
