"""The serving service's consumers: a promotion in, the champion it names served; and what serving says
back on the bus when that champion cannot be loaded."""

from __future__ import annotations

from typing import Any

from services.serving.deps import ServingDeps
from services.serving.holder import ModelHolder, SwapFailure
from shared import events
from shared.events import Envelope, ModelPromoted, ModelSwapFailed
from shared.runtime.logging import get_logger

log = get_logger("mesh.serving")


async def on_model_promoted(deps: ServingDeps, event: Envelope[ModelPromoted]) -> None:
    """A broadcast: every worker syncs the promoted model (one not declared yet is looked for first). The
    alias, not the event, says what to serve, so a late or repeated promotion cannot bring back a version
    the alias has moved on from."""
    await deps.models.on_promoted(event.payload.model_name, cause=event)


async def announce_swap_failure(
    deps: ServingDeps, holder: ModelHolder, failure: SwapFailure, cause: Envelope[Any] | None
) -> None:
    """``model.swap_failed`` from this worker, continuing the promotion's chain when one asked for the
    swap. Each worker reports its own failure (a worker id per event), as each keeps its own model."""
    payload = ModelSwapFailed(
        model_name=holder.name,
        version=failure.version,
        serving_version=holder.current.version if holder.current is not None else None,
        worker=deps.worker,
        error=failure.error,
    )
    try:
        await deps.bus.emit(events.MODEL_SWAP_FAILED, payload, cause=cause, dedupe_key=deps.worker)
    except Exception:  # the bus down too: the failure is still logged, in status and in the metrics
        log.exception("could not announce the failed swap", model=holder.name, version=failure.version)
