"""The monitor's HTTP endpoints: ``GET /drift`` and ``GET /drift/report`` for people, ``POST /labels``
for the ground truth of served predictions."""

from __future__ import annotations

import asyncio

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

from services.monitor.deps import MonitorDeps
from services.monitor.report import render_report
from shared import events
from shared.events import LabelObserved, new_event, utcnow
from shared.runtime.service import deps_of


async def drift(request: Request) -> JSONResponse:
    return JSONResponse(deps_of(request, MonitorDeps).monitor.latest())


async def drift_report(request: Request) -> HTMLResponse:
    monitor = deps_of(request, MonitorDeps).monitor
    return HTMLResponse(await asyncio.to_thread(render_report, monitor))


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
