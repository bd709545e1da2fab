"""The ingest service's consumers: a batch named by a file path or URI in, a stored snapshot announced."""

from __future__ import annotations

from services.ingest.batches import BatchRejected, UnsupportedFormat, batch_format, ingest_batch, local_path
from services.ingest.deps import IngestDeps
from shared.bus import PermanentError
from shared.events import Envelope, IngestRequested
from shared.ml.datasets import UnknownDataset, load_schema
from shared.ml.declaration import require_valid_dataset


async def on_ingest_requested(deps: IngestDeps, event: Envelope[IngestRequested]) -> None:
    """Everything that fails here would fail again: each failure dead-letters the event with its reason."""
    request = event.payload
    limit = deps.settings.max_upload_bytes
    try:
        schema = load_schema(deps.settings.config_dir, request.dataset)
        require_valid_dataset(deps.settings.config_dir, request.dataset)
        path = local_path(request.uri)
        fmt = batch_format(request.content_type, path.name)
        if not path.is_file():
            raise PermanentError(f"uri: {request.uri} is not a readable file")
        if path.stat().st_size > limit:
            raise PermanentError(f"uri: {request.uri} is larger than {limit} bytes")
        outcome = await ingest_batch(
            deps.store,
            schema,
            path.read_bytes(),
            fmt,
            source=request.uri,
            announce=deps.announce,
            cause=event,
            trigger_training=request.trigger_training,
        )
    except (UnknownDataset, UnsupportedFormat, ValueError) as exc:
        raise PermanentError(str(exc)) from exc
    except BatchRejected as exc:
        raise PermanentError(f"batch rejected: {exc.summary()}") from exc
    deps.log.info("batch ingested", **outcome.log_fields())
