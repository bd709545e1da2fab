"""The monitor's consumers: predictions and labels into the windows, the feedback snapshot's arrival, and
every promotion (a new reference to compare with)."""

from __future__ import annotations

import asyncio
import time

from services.monitor.decisions import act_on, retrain_on_feedback_stored
from services.monitor.deps import MonitorDeps
from services.monitor.references import fetch_reference
from shared.events import DataIngested, Envelope, LabelObserved, ModelPromoted, PredictionMade


async def on_predictions(deps: MonitorDeps, envelopes: list[Envelope[PredictionMade]]) -> None:
    monitor = deps.monitor
    records = [e.payload.model_dump() for e in envelopes if e.payload.model_name == monitor.config.model_name]
    if not records:
        return
    for version in {r["model_version"] for r in records}:
        await _ensure_reference(deps, version)
    results = await asyncio.to_thread(monitor.add_predictions, records, time.time())
    await act_on(deps, results, envelopes[-1])


async def on_labels(deps: MonitorDeps, envelopes: list[Envelope[LabelObserved]]) -> None:
    labels = [{"request_id": e.payload.request_id, "label": e.payload.label} for e in envelopes]
    results = await asyncio.to_thread(deps.monitor.add_labels, labels, time.time())
    await act_on(deps, results, envelopes[-1])


async def on_data_ingested(deps: MonitorDeps, event: Envelope[DataIngested]) -> None:
    await retrain_on_feedback_stored(deps, event)


async def on_promoted(deps: MonitorDeps, event: Envelope[ModelPromoted]) -> None:
    if event.payload.model_name == deps.monitor.config.model_name:
        await _ensure_reference(deps, event.payload.version)
        deps.monitor.new_champion()


async def _ensure_reference(deps: MonitorDeps, version: str) -> None:
    monitor = deps.monitor
    if version in monitor.references:
        return
    model_name = monitor.config.model_name
    monitor.set_reference(await asyncio.to_thread(fetch_reference, deps.mlflow, model_name, version))
    deps.log.info("reference loaded", model=model_name, version=version)
