"""The ingest service's HTTP endpoints: upload a batch, list a dataset's snapshots."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.ingest.batches import BatchRejected, UnsupportedFormat, batch_format, ingest_batch
from services.ingest.deps import IngestDeps
from services.ingest.schemas import (
    UPLOAD_BODY,
    BatchRejectedBody,
    BatchStored,
    DatasetMisdeclaredBody,
    SnapshotList,
)
from services.ingest.uploads import BodyTooLarge, read_limited
from shared.ml.config_files import InvalidConfig
from shared.ml.datasets import DATASET_NAME, UnknownDataset, load_schema
from shared.ml.declaration import require_valid_dataset
from shared.runtime.auth import API_TOKEN_REFUSED, api_token_required
from shared.runtime.service import ErrorBody, provide

router = APIRouter(tags=["datasets"])

Deps = Annotated[IngestDeps, Depends(provide(IngestDeps))]
# The pattern is shown, not enforced by FastAPI: a name that cannot be declared is refused as every
# undeclared one is (404 naming `name`), by the dataset lookup itself.
DatasetName = Annotated[
    str,
    Path(
        description="a dataset declared in `deploy/config/datasets/<name>.yaml`",
        examples=["demo"],
        json_schema_extra={"pattern": DATASET_NAME.pattern},
    ),
]
UNKNOWN_DATASET: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no such dataset is declared (`field`: `name`)"}
}


def _field_error(message: str, field: str, status_code: int) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status_code)


@router.post(
    "/datasets/{name}/batches",
    summary="Upload a batch",
    status_code=201,
    response_model=BatchStored,
    responses={
        200: {"model": BatchStored, "description": "the same rows are stored already (`duplicate`: true)"},
        **UNKNOWN_DATASET,
        **API_TOKEN_REFUSED,
        413: {"model": ErrorBody, "description": "larger than `MESH_MAX_UPLOAD_BYTES` (`field`: `body`)"},
        415: {"model": ErrorBody, "description": "an unsupported `Content-Type` (`field`: `content-type`)"},
        422: {
            "model": BatchRejectedBody | DatasetMisdeclaredBody,
            "description": "rows failing the schema, every column and rule named (`field`: the first "
            "failing column, or `body` for a batch that cannot be read: empty, not UTF-8, cut short); or a "
            "dataset whose declaration does not fit together, every problem named. Nothing is stored.",
        },
    },
    openapi_extra=UPLOAD_BODY,
    dependencies=[Depends(api_token_required)],
)
async def upload_batch(name: DatasetName, request: Request, response: Response, deps: Deps) -> Any:
    """Validate a batch against the dataset's schema and store it as a snapshot, announced on
    `data.ingested`: 201 with the new snapshot, 200 when the same rows are stored already."""
    limit = deps.settings.max_upload_bytes
    try:
        schema = load_schema(deps.settings.config_dir, name)
        # Refused at the door, with every problem named: a dataset whose four files do not fit together
        # would otherwise be stored, then fail deep in features or training.
        await asyncio.to_thread(require_valid_dataset, deps.settings.config_dir, name)
        fmt = batch_format(request.headers.get("content-type"))
        data = await read_limited(request, limit)
    except UnknownDataset as exc:
        return _field_error(str(exc), "name", 404)
    except InvalidConfig as exc:
        problems = [dataclasses.asdict(p) for p in exc.problems]
        error = f"dataset {name!r} is not declared correctly: fix its configuration first"
        return JSONResponse({"error": error, "field": "name", "problems": problems}, status_code=422)
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
            body = BatchRejectedBody(
                error=f"batch rejected: {exc.summary()}", field=exc.field, dataset=name, failures=exc.failures
            )
            return JSONResponse(body.model_dump(), status_code=422)
    deps.log.info("batch ingested", **outcome.log_fields())
    response.status_code = 200 if outcome.duplicate else 201
    return {"duplicate": outcome.duplicate, **outcome.manifest.model_dump()}


@router.get(
    "/datasets/{name}/snapshots",
    summary="List a dataset's snapshots",
    response_model=SnapshotList,
    responses=UNKNOWN_DATASET,
)
async def list_snapshots(name: DatasetName, deps: Deps) -> Any:
    """Every stored snapshot of a declared dataset, oldest first."""
    try:
        load_schema(deps.settings.config_dir, name)
    except UnknownDataset as exc:
        return _field_error(str(exc), "name", 404)
    return SnapshotList(dataset=name, snapshots=deps.store.list(name))
