"""The ingest service's HTTP contract: what an upload takes and answers, what a listing answers, and how
each refusal reads. Shown in its OpenAPI (``/openapi.json``, ``/docs``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, create_model

from services.ingest.batches import CONTENT_TYPES, ColumnFailure
from shared.ml.snapshots import SnapshotManifest

DESCRIPTION = """\
Batches of a declared dataset come in over HTTP (or as `ingest.requested` events naming a file under the
data root), are validated against the dataset's schema (`deploy/config/datasets/<name>.yaml`) and stored
as immutable, content-addressed Parquet snapshots; each new snapshot is announced on `data.ingested`. CSV
and JSON lines are UTF-8 text; a batch that is empty, in another encoding or cut short is refused whole.

Refusals are `{"error": ..., "field": ...}`, naming what to fix.
"""

# The manifest's fields after ``duplicate``, as the upload has always answered them: derived from the
# manifest so that the two cannot drift apart.
_MANIFEST: dict[str, Any] = {
    name: (info.annotation, info) for name, info in SnapshotManifest.model_fields.items()
}
BatchStored: type[BaseModel] = create_model(
    "BatchStored",
    __doc__="The stored snapshot: new (201), or the one holding the same rows already (200).",
    duplicate=(
        bool,
        Field(description="true: the same content was stored already; nothing stored or announced again"),
    ),
    **_MANIFEST,
)


class SnapshotList(BaseModel):
    """Every stored snapshot of a dataset."""

    dataset: str
    snapshots: list[SnapshotManifest]


class BatchRejectedBody(BaseModel):
    """The rows failed the dataset's schema: every failing column and rule; nothing was stored."""

    error: str = Field(examples=["batch rejected: age [type]: 1 value(s) are not int (e.g. 'abc')"])
    field: str = Field(
        description="the first failing column, or `body` when the batch as a whole is not readable",
        examples=["age"],
    )
    dataset: str
    failures: list[ColumnFailure]


class ConfigProblemBody(BaseModel):
    file: str
    field: str
    message: str


class DatasetMisdeclaredBody(BaseModel):
    """The dataset's declaration (its schema, features, model and monitor files) does not fit together."""

    error: str
    field: str = Field(examples=["name"])
    problems: list[ConfigProblemBody]


_RAW = {"schema": {"type": "string", "format": "binary"}}
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "The batch's rows, raw: CSV, Parquet or JSON lines, chosen by `Content-Type`. At most "
            "`MESH_MAX_UPLOAD_BYTES` bytes (413 beyond); columns as the dataset's schema declares them."
        ),
        "content": {content_type: _RAW for content_type in CONTENT_TYPES},
    }
}
