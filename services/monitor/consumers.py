"""The monitor's consumers: predictions and labels into the state of their models' windows, the
feedback snapshot's arrival or refusal, and every promotion (its model's policy starts over)."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from services.monitor.deps import MonitorDeps
from services.monitor.evaluation import (
    evaluate_window,
    judge_labels,
    new_champion,
    retrain_on_feedback_stored,
    retrain_without_refused_feedback,
)
from shared.events import DataIngested, DeadLetter, Envelope, LabelObserved, ModelPromoted, PredictionMade


async def on_predictions(deps: MonitorDeps, envelopes: list[Envelope[PredictionMade]]) -> None:
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for envelope in envelopes:
        by_model[envelope.payload.model_name].append(envelope.payload.model_dump(mode="json"))
    watched_models = {name: model for name in by_model if (model := deps.models.get(name)) is not None}
    if not watched_models:
        return  # records of models nobody declared a monitor config for
    watched = {name: by_model[name] for name in watched_models}
    records = [record for batch in watched.values() for record in batch]
    windows = await deps.store.add_predictions(records, time.time(), deps.models.join_capacity)
    for (name, version), rows in sorted(windows.items()):
        model = watched_models[name]
        await deps.store.bound(name, version, model.config.join_capacity)
        # Only a window this batch filled is worth a transaction; one left full by a killed monitor is
        # the ticker's. A large batch can fill more than one.
        if model.config.window.rows_to_close(rows, 0.0, by_clock=False):
            while await evaluate_window(deps, model, version, "full", envelopes[-1]) is not None:
                pass
    for model in watched_models.values():
        await judge_labels(deps, model, envelopes[-1])


async def on_labels(deps: MonitorDeps, envelopes: list[Envelope[LabelObserved]]) -> None:
    labels = [(e.payload.request_id, e.payload.label) for e in envelopes]
    joined = await deps.store.add_labels(labels, deps.models.join_capacity)
    for name in joined:
        model = deps.models.get(name)
        if model is not None:
            await deps.store.bound(name, None, model.config.join_capacity)
            await judge_labels(deps, model, envelopes[-1])


async def on_data_ingested(deps: MonitorDeps, event: Envelope[DataIngested]) -> None:
    await retrain_on_feedback_stored(deps, event)


async def on_dead_letters(deps: MonitorDeps, letters: list[Envelope[DeadLetter]]) -> None:
    for letter in letters:
        await retrain_without_refused_feedback(deps, letter)


async def on_promoted(deps: MonitorDeps, event: Envelope[ModelPromoted]) -> None:
    model = deps.models.get(event.payload.model_name)
    if model is not None:
        await deps.references.get(model.name, event.payload.version)
        await new_champion(deps, model)
