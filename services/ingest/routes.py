"""The ingest service's HTTP endpoints: upload a batch, list a dataset's snapshots."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from services.ingest.batches import BatchRejected, UnsupportedFormat, batch_format, ingest_batch
from services.ingest.deps import IngestDeps
from services.ingest.uploads import BodyTooLarge, read_limited
from shared.ml.datasets import UnknownDataset, load_schema
from shared.runtime.service import deps_of


def _field_error(message: str, field: str, status_code: int) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status_code)


async def upload_batch(request: Request) -> JSONResponse:
    """POST /datasets/{name}/batches: 201 with the new snapshot, 200 when the same rows are stored already."""
    deps = deps_of(request, IngestDeps)
    limit = deps.settings.max_upload_bytes
    name = request.path_params["name"]
    try:
        schema = load_schema(deps.settings.config_dir, name)
        fmt = batch_format(request.headers.get("content-type"))
        data = await read_limited(request, limit)
    except UnknownDataset as exc:
        return _field_error(str(exc), "name", 404)
    except UnsupportedFormat as exc:
        return _field_error(str(exc), "content-type", 415)
    except BodyTooLarge:
        return _field_error(f"batch larger than the limit of {limit} bytes", "body", 413)
    with deps.tracer.start_as_current_span("ingest.upload", attributes={"mesh.dataset": name}):
        try:
            outcome = await ingest_batch(deps.store, schema, data, fmt, source="http", announce=deps.announce)
        except BatchRejected as exc:
            failures = [f.model_dump() for f in exc.failures]
            deps.log.info("batch rejected", dataset=name, failures=failures)
            return JSONResponse(
                {"error": "batch rejected", "dataset": name, "failures": failures}, status_code=422
            )
    deps.log.info("batch ingested", **outcome.log_fields())
    body = {"duplicate": outcome.duplicate, **outcome.manifest.model_dump()}
    return JSONResponse(body, status_code=200 if outcome.duplicate else 201)


async def list_snapshots(request: Request) -> JSONResponse:
    """GET /datasets/{name}/snapshots: every stored snapshot of a declared dataset."""
    deps = deps_of(request, IngestDeps)
    name = request.path_params["name"]
    try:
        load_schema(deps.settings.config_dir, name)
    except UnknownDataset as exc:
        return _field_error(str(exc), "name", 404)
    snapshots = [m.model_dump() for m in deps.store.list(name)]
    return JSONResponse({"dataset": name, "snapshots": snapshots})
