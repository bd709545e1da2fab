"""The monitor's HTTP endpoints: ``GET /drift`` (every model), ``GET /drift/{model}`` and its HTML
report ``GET /drift/{model}/report`` for people, ``POST /labels`` for the ground truth of predictions."""

from __future__ import annotations

import asyncio

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from services.monitor.deps import MonitorDeps
from services.monitor.models import MonitoredModel
from services.monitor.report import render_report
from services.monitor.windows import WindowResult, finite
from shared import events
from shared.events import LabelObserved, new_event, utcnow
from shared.runtime.service import deps_of


def _model(request: Request, deps: MonitorDeps) -> MonitoredModel | JSONResponse:
    name = request.path_params["model"]
    model = deps.models.get(name)
    if model is None:
        known = sorted(m.name for m in deps.models.all())
        error = f"model {name!r} is not monitored (monitored: {', '.join(known) or 'none'})"
        return JSONResponse({"error": error, "field": "model"}, status_code=404)
    return model


async def drift(request: Request) -> JSONResponse:
    """Every monitored model's windows evaluated, latest result and rows waiting."""
    deps = deps_of(request, MonitorDeps)
    summaries = {m.name: await deps.store.summary(m.name) for m in deps.models.all()}
    return JSONResponse(finite({"models": summaries}))


async def model_drift(request: Request) -> JSONResponse:
    deps = deps_of(request, MonitorDeps)
    model = _model(request, deps)
    if isinstance(model, JSONResponse):
        return model
    summary = await deps.store.summary(model.name)
    return JSONResponse(finite({**summary, "references": deps.references.known(model.name)}))


async def drift_report(request: Request) -> Response:
    deps = deps_of(request, MonitorDeps)
    model = _model(request, deps)
    if isinstance(model, JSONResponse):
        return model
    history = [WindowResult.from_dict(stored) for stored in await deps.store.history(model.name)]
    return HTMLResponse(await asyncio.to_thread(render_report, model, history))


async def receive_labels(request: Request) -> JSONResponse:
    """Ground truth for served predictions: ``{"labels": [{"request_id": ..., "label": ...}]}``."""
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": "body must be JSON", "field": "body"}, status_code=400)
    items = body.get("labels") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        return JSONResponse({"error": "labels: a non-empty list is required", "field": "labels"}, 422)
    envelopes = []
    for index, item in enumerate(items):
        try:
            label = LabelObserved.model_validate({"observed_at": utcnow(), **item})
        except (ValidationError, TypeError) as exc:
            return JSONResponse({"error": f"labels[{index}]: {exc}", "field": f"labels[{index}]"}, 422)
        envelopes.append(new_event(events.LABELS, label))
    await deps_of(request, MonitorDeps).bus.publish_many(envelopes)
    return JSONResponse({"accepted": len(envelopes)}, status_code=202)
