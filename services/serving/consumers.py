"""The serving service's consumers: a promotion in, the champion it names served."""

from __future__ import annotations

from services.serving.deps import ServingDeps
from shared.events import Envelope, ModelPromoted


async def on_model_promoted(deps: ServingDeps, event: Envelope[ModelPromoted]) -> None:
    """A broadcast: every worker syncs the promoted model (one not declared yet is looked for first). The
    alias, not the event, says what to serve, so a late or repeated promotion cannot bring back a version
    the alias has moved on from."""
    await deps.models.on_promoted(event.payload.model_name)
