"""The monitor's HTTP endpoints: ``GET /drift`` (every model), ``GET /drift/{model}`` and its HTML
report ``GET /drift/{model}/report`` for people, ``POST /labels`` for the ground truth of predictions.

The drift summaries are passed on as stored in Redis (possibly by an older monitor): declared in the
OpenAPI, but not re-validated on the way out."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from starlette.responses import HTMLResponse, JSONResponse, Response

from services.monitor.deps import MonitorDeps
from services.monitor.models import MonitoredModel
from services.monitor.report import render_report
from services.monitor.schemas import DriftOverview, LabelsAccepted, LabelsRequest, ModelDriftDetail
from services.monitor.windows import WindowResult, finite
from shared import events
from shared.events import LabelObserved, new_event, utcnow
from shared.runtime.auth import API_TOKEN_REFUSED, api_token_required
from shared.runtime.service import ErrorBody, JsonBody, provide

router = APIRouter()

Deps = Annotated[MonitorDeps, Depends(provide(MonitorDeps))]
ModelName = Annotated[str, Path(description="a monitored model's name", examples=["churn-demo"])]
NOT_MONITORED: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "the model is not monitored (`field`: `model`)"}
}
# The report's refusal is JSON although its answer is HTML (a "model" would be documented as text/html).
REPORT_NOT_MONITORED: dict[int | str, dict[str, Any]] = {
    404: {
        "description": NOT_MONITORED[404]["description"],
        "content": {"application/json": {"schema": ErrorBody.model_json_schema()}},
    }
}


def _model(name: str, deps: MonitorDeps) -> MonitoredModel | JSONResponse:
    model = deps.models.get(name)
    if model is None:
        known = sorted(m.name for m in deps.models.all())
        error = f"model {name!r} is not monitored (monitored: {', '.join(known) or 'none'})"
        return JSONResponse({"error": error, "field": "model"}, status_code=404)
    return model


@router.get("/drift", tags=["drift"], summary="Every watched model", response_model=DriftOverview)
async def drift(deps: Deps) -> Response:
    """Every monitored model's windows evaluated, latest result and rows waiting."""
    summaries = {m.name: await deps.store.summary(m.name) for m in deps.models.all()}
    return JSONResponse(finite({"models": summaries}))


@router.get(
    "/drift/{model}",
    tags=["drift"],
    summary="One model's drift",
    response_model=ModelDriftDetail,
    responses=NOT_MONITORED,
)
async def model_drift(model: ModelName, deps: Deps) -> Response:
    """One model: windows evaluated, the latest window's scores, decision and reasons, and the references
    held."""
    found = _model(model, deps)
    if isinstance(found, JSONResponse):
        return found
    summary = await deps.store.summary(found.name)
    return JSONResponse(finite({**summary, "references": deps.references.known(found.name)}))


@router.get(
    "/drift/{model}/report",
    tags=["drift"],
    summary="One model's drift report (HTML)",
    response_class=HTMLResponse,
    responses=REPORT_NOT_MONITORED,
)
async def drift_report(model: ModelName, deps: Deps) -> Response:
    """For people: reference against current distributions of each feature, and the score history."""
    found = _model(model, deps)
    if isinstance(found, JSONResponse):
        return found
    history = [WindowResult.from_dict(stored) for stored in await deps.store.history(found.name)]
    return HTMLResponse(await asyncio.to_thread(render_report, found, history))


@router.post(
    "/labels",
    tags=["labels"],
    summary="Ground truth of served predictions",
    status_code=202,
    response_model=LabelsAccepted,
    responses=API_TOKEN_REFUSED,
    dependencies=[Depends(api_token_required)],
)
async def receive_labels(
    deps: Deps, body: Annotated[LabelsRequest, Depends(JsonBody(LabelsRequest))]
) -> LabelsAccepted:
    """Labels for served predictions, each keyed by the `request_id` serving answered with; published on
    the `labels` stream, where the monitor joins them to their predictions."""
    envelopes = [
        new_event(
            events.LABELS,
            LabelObserved(
                request_id=label.request_id, label=label.label, observed_at=label.observed_at or utcnow()
            ),
        )
        for label in body.labels
    ]
    await deps.bus.publish_many(envelopes)
    return LabelsAccepted(accepted=len(envelopes))
