"""Ingest service wiring: HTTP upload, the ``ingest.requested`` consumer, snapshot listing."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.ingest.handlers import (
    BatchRejected,
    UnsupportedFormat,
    batch_format,
    ingest_batch,
    local_path,
)
from shared import events
from shared.bus import PermanentError
from shared.events import DataIngested, Envelope, IngestRequested
from shared.ml.datasets import UnknownDataset, load_schema
from shared.ml.snapshots import SnapshotStore
from shared.runtime.service import ServiceRuntime
from shared.runtime.settings import MeshSettings


class _TooLarge(Exception):
    pass


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


def create_app(settings: MeshSettings | None = None) -> Starlette:
    runtime = ServiceRuntime("ingest", settings)
    settings = runtime.settings
    store = SnapshotStore(settings.effective_data_root)
    bus = runtime.bus

    async def announce(payload: DataIngested, cause: Envelope[Any] | None) -> Envelope[Any]:
        return await bus.emit(events.DATA_INGESTED, payload, cause=cause, dedupe_key=payload.snapshot_id)

    async def upload(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        try:
            schema = load_schema(settings.config_dir, name)
            fmt = batch_format(request.headers.get("content-type"))
            data = await _read_limited(request, settings.max_upload_bytes)
        except UnknownDataset as exc:
            return JSONResponse({"error": str(exc), "field": "name"}, status_code=404)
        except UnsupportedFormat as exc:
            return JSONResponse({"error": str(exc), "field": "content-type"}, status_code=415)
        except _TooLarge:
            return JSONResponse(
                {
                    "error": f"batch larger than the limit of {settings.max_upload_bytes} bytes",
                    "field": "body",
                },
                status_code=413,
            )
        with runtime.tracer.start_as_current_span("ingest.upload", attributes={"mesh.dataset": name}):
            try:
                outcome = await ingest_batch(store, schema, data, fmt, source="http", announce=announce)
            except BatchRejected as exc:
                failures = [f.model_dump() for f in exc.failures]
                runtime.log.info("batch rejected", dataset=name, failures=failures)
                return JSONResponse(
                    {"error": "batch rejected", "dataset": name, "failures": failures}, status_code=422
                )
        body = {"duplicate": outcome.duplicate, **outcome.manifest.model_dump()}
        runtime.log.info(
            "batch ingested",
            dataset=name,
            snapshot_id=outcome.manifest.snapshot_id,
            duplicate=outcome.duplicate,
        )
        return JSONResponse(body, status_code=200 if outcome.duplicate else 201)

    async def list_snapshots(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        try:
            load_schema(settings.config_dir, name)
        except UnknownDataset as exc:
            return JSONResponse({"error": str(exc), "field": "name"}, status_code=404)
        snapshots = [m.model_dump() for m in store.list(name)]
        return JSONResponse({"dataset": name, "snapshots": snapshots})

    async def on_ingest_requested(event: Envelope[Any]) -> None:
        request: IngestRequested = event.payload
        try:
            schema = load_schema(settings.config_dir, request.dataset)
            path = local_path(request.uri)
            fmt = batch_format(request.content_type, path.name)
            if not path.is_file():
                raise PermanentError(f"uri: {request.uri} is not a readable file")
            if path.stat().st_size > settings.max_upload_bytes:
                raise PermanentError(f"uri: {request.uri} is larger than {settings.max_upload_bytes} bytes")
            outcome = await ingest_batch(
                store,
                schema,
                path.read_bytes(),
                fmt,
                source=request.uri,
                announce=announce,
                cause=event,
                trigger_training=request.trigger_training,
            )
        except (UnknownDataset, UnsupportedFormat, ValueError) as exc:
            raise PermanentError(str(exc)) from exc
        except BatchRejected as exc:
            raise PermanentError(f"batch rejected: {exc.summary()}") from exc
        runtime.log.info(
            "batch ingested",
            dataset=request.dataset,
            snapshot_id=outcome.manifest.snapshot_id,
            duplicate=outcome.duplicate,
        )

    bus.consume(events.INGEST_REQUESTED, on_ingest_requested)

    @runtime.readiness_check
    async def config_readable() -> str | None:
        datasets = settings.config_dir / "datasets"
        return None if datasets.is_dir() else f"config: {datasets} does not exist"

    return runtime.asgi(
        [
            Route("/datasets/{name}/batches", upload, methods=["POST"]),
            Route("/datasets/{name}/snapshots", list_snapshots, methods=["GET"]),
        ]
    )
