"""The registry's consumer: a trained model in, ``model.promoted`` or ``model.rejected`` out."""

from __future__ import annotations

from services.registry.decisions import decide_under_lock
from services.registry.deps import RegistryDeps
from services.registry.metrics import PROMOTIONS, REJECTIONS
from shared import events
from shared.events import Envelope, ModelPromoted, ModelTrained


async def on_model_trained(deps: RegistryDeps, event: Envelope[ModelTrained]) -> None:
    trained = event.payload
    attributes = {"mesh.run_id": trained.run_id, "mesh.model_name": trained.model_name}
    with deps.tracer.start_as_current_span("registry.gate", attributes=attributes) as span:
        outcome = await decide_under_lock(deps, trained)
        span.set_attribute("mesh.promoted", isinstance(outcome, ModelPromoted))
        if isinstance(outcome, ModelPromoted):
            span.set_attribute("mesh.model_version", outcome.version)
    if isinstance(outcome, ModelPromoted):
        await deps.bus.emit(events.MODEL_PROMOTED, outcome, cause=event)
        PROMOTIONS.labels(trained.model_name, "promote").inc()
        deps.log.info("model promoted", model=trained.model_name, version=outcome.version)
    else:
        await deps.bus.emit(events.MODEL_REJECTED, outcome, cause=event)
        REJECTIONS.labels(trained.model_name).inc()
        deps.log.info("model rejected", model=trained.model_name, reasons=outcome.reasons)
