"""The ingest service's consumers: a batch named by a file path or URI in, a stored snapshot announced."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.ingest.batches import BatchRejected, UnsupportedFormat, batch_format, ingest_batch, source_file
from services.ingest.deps import IngestDeps
from shared.bus import PermanentError
from shared.events import Envelope, IngestRequested
from shared.ml.datasets import UnknownDataset, load_schema
from shared.ml.declaration import require_valid_dataset


def read_at_most(path: Path, limit: int) -> bytes | None:
    """The file's bytes, or None past ``limit`` (read up to one byte more, however large it has grown)."""
    if not path.is_file():  # missing, or a directory, a FIFO a read would wait on forever
        raise PermanentError(f"uri: {path} is not a readable file")
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except OSError as exc:  # not ours to read, or gone since
        raise PermanentError(f"uri: {path} is not a readable file ({exc.strerror})") from None
    return None if len(data) > limit else data


async def on_ingest_requested(deps: IngestDeps, event: Envelope[IngestRequested]) -> None:
    """Everything that fails here would fail again: each failure dead-letters the event with its reason."""
    request = event.payload
    limit = deps.settings.max_upload_bytes
    try:
        schema = load_schema(deps.settings.config_dir, request.dataset)
        require_valid_dataset(deps.settings.config_dir, request.dataset)
        path = source_file(request.uri, deps.settings.effective_data_root)
        data = await asyncio.to_thread(read_at_most, path, limit)
        if data is None:
            raise PermanentError(f"uri: {request.uri} is larger than {limit} bytes")
        fmt = batch_format(request.content_type, path.name)
        outcome = await ingest_batch(
            deps.store,
            schema,
            data,
            fmt,
            source=request.uri,
            announce=deps.announce,
            cause=event,
            trigger_training=request.trigger_training,
        )
    except UnknownDataset as exc:
        raise PermanentError(f"dataset: {exc}") from exc
    except UnsupportedFormat as exc:
        raise PermanentError(f"content_type: {exc}") from exc
    except ValueError as exc:
        raise PermanentError(str(exc)) from exc
    except BatchRejected as exc:
        raise PermanentError(f"batch rejected: {exc.summary()}") from exc
    deps.log.info("batch ingested", **outcome.log_fields())
