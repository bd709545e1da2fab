"""What the monitor does with the trigger policy's decisions.

An episode that starts is announced once (``drift.detected``). A retrain decision asks for the retrain
straight away when no labelled live rows wait; otherwise those rows are first ingested as a snapshot of
the dataset (``ingest.requested`` with ``trigger_training`` off), and the retrain is asked for once ingest
announces that snapshot (``data.ingested``): the new model learns from the traffic that showed the drift,
and the registry gate still decides whether it serves.
"""

from __future__ import annotations

import asyncio
from typing import Any

from services.monitor import metrics
from services.monitor.deps import MonitorDeps
from services.monitor.windows import WindowResult, finite
from shared import events
from shared.events import DataIngested, DriftDetected, Envelope, IngestRequested, RetrainRequested

PENDING_KEY = "mesh:monitor:pending-retrains"  # ingest.requested event id -> the retrain to ask for


async def act_on(deps: MonitorDeps, results: list[WindowResult], cause: Envelope[Any] | None) -> None:
    """Record, log and act on each evaluated window; ``cause`` is the event that closed them, if any."""
    for result in results:
        metrics.record_window(result)
        decision = result.decision
        deps.log.info(
            "trigger decision",
            decision="retrain" if decision.retrain else "hold",
            fired=decision.fired,
            reasons=decision.reasons,
            model_version=result.model_version,
            performance_drop=result.performance_drop,
        )
        if decision.episode_started:
            payload = DriftDetected(
                model_name=deps.monitor.config.model_name,
                model_version=result.model_version,
                window=result.window(),
                scores=result.scores,
                fired=decision.fired,
            )
            deps.episode.announced = await deps.bus.emit(events.DRIFT_DETECTED, payload, cause=cause)
        if decision.retrain:
            await request_retrain(deps, result, deps.episode.announced or cause)


async def request_retrain(deps: MonitorDeps, result: WindowResult, cause: Envelope[Any] | None) -> None:
    """Ask for the retrain ``result`` decided; via a feedback snapshot when labelled rows are waiting."""
    evidence = {**result.summary(), "episode_event_id": cause.event_id if cause else None}
    retrain = RetrainRequested(
        dataset=deps.dataset,
        reason="; ".join(result.decision.fired) or "drift",
        evidence=finite(evidence),
        window_snapshots=deps.monitor.config.retrain.window_snapshots,
    )
    metrics.RETRAINS.labels(deps.dataset).inc()
    feedback = await asyncio.to_thread(deps.monitor.take_feedback, deps.feedback_dir)
    if feedback is None:
        await deps.bus.emit(events.RETRAIN_REQUESTED, retrain, cause=cause)
        return
    path, rows = feedback
    request = await deps.bus.emit(
        events.INGEST_REQUESTED,
        IngestRequested(dataset=deps.dataset, uri=str(path.resolve()), trigger_training=False),
        cause=cause,
    )
    # Remembered in Redis, not in memory: a restart between the two steps must not lose the retrain.
    await deps.bus.redis.hset(PENDING_KEY, request.event_id, retrain.model_dump_json())
    deps.log.info("feedback sent to ingest before retraining", rows=rows, path=str(path))


async def retrain_on_feedback_stored(deps: MonitorDeps, event: Envelope[DataIngested]) -> None:
    """Ask for the retrain that waited for the snapshot ``event`` announces, if this monitor asked for it."""
    if event.causation_id is None:
        return
    pending = await deps.bus.redis.hget(PENDING_KEY, event.causation_id)
    if pending is None:
        return  # not a snapshot this monitor asked for
    retrain = RetrainRequested.model_validate_json(pending)
    # Emitted before it is forgotten: after a crash in between, the redelivered event emits it again with
    # the same derived event id, and the consumers' done-markers drop the copy.
    await deps.bus.emit(events.RETRAIN_REQUESTED, retrain, cause=event)
    await deps.bus.redis.hdel(PENDING_KEY, event.causation_id)
    deps.log.info("retrain requested", dataset=deps.dataset, reason=retrain.reason)
