"""Evaluating a model's window as one transaction over the state in Redis, and acting on the decision.

Read (under WATCH of the model's policy key), decide in Python, then commit in one MULTI: the window's
rows taken off, the policy's new state, the result in the history, and the events the decision calls
for (``drift.detected``, ``ingest.requested`` of the feedback rows or ``retrain.requested``). Either all
of it happens or none: a monitor killed at any point leaves the window to be evaluated again, and two
replicas racing on one model commit once (the loser's EXEC fails, it reads again and finds nothing due).

An episode that starts is announced once. A retrain decision asks for the retrain straight away when no
labelled live rows wait; otherwise those rows are first written as a batch of the dataset and sent to
ingest (``trigger_training`` off), and the retrain is asked for once ingest announces that snapshot
(``retrain_on_feedback_stored``): the new model learns from the traffic that showed the drift, and the
registry gate still decides whether it serves.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from services.monitor import metrics
from services.monitor.deps import MonitorDeps
from services.monitor.models import MonitoredModel
from services.monitor.policy import PolicyState, TriggerPolicy
from services.monitor.references import Reference
from services.monitor.state import HISTORY, ModelKeys
from services.monitor.windows import (
    WindowInputs,
    WindowResult,
    evaluate,
    feedback_batch,
    finite,
    labelled_frame,
    prediction_frame,
)
from shared import events
from shared.events import (
    DataIngested,
    DeadLetter,
    DriftDetected,
    Envelope,
    IngestRequested,
    RetrainRequested,
    new_event,
    parse_event,
    utcnow,
)

PENDING_KEY = "mesh:monitor:pending-retrains"  # ingest.requested event id -> the retrain to ask for
COMMIT_ATTEMPTS = 20  # a commit lost to another replica is read and decided again, this many times
LABELLED_SCAN = 4  # labelled rows read per evaluation: this many windows' worth, newest first

# What asks for an evaluation: a window that filled up, the periodic check of windows open too long,
# or enough newly labelled rows to judge performance.
Trigger = Literal["full", "due", "labels"]


@dataclass
class _Plan:
    """What one evaluation read, decided and will write."""

    inputs: WindowInputs
    taken: int  # window rows the commit removes
    labels_consumed: int
    policy: TriggerPolicy
    result: WindowResult
    feedback: tuple[Path, int] | None = None  # the batch file written, and the feedback rows it holds


async def evaluate_window(
    deps: MonitorDeps,
    model: MonitoredModel,
    version: str,
    trigger: Trigger,
    cause: Envelope[Any] | None,
    *,
    consume_labels: bool = False,
) -> WindowResult | None:
    """Evaluate ``version`` of ``model`` if ``trigger`` still holds when read; None if nothing was due."""
    reference = await deps.references.get(model.name, version)
    keys = ModelKeys(model.name)
    for _ in range(COMMIT_ATTEMPTS):
        plan: _Plan | None = None
        async with deps.store.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(keys.policy)
                plan = await _read_and_decide(deps, pipe, model, reference, version, trigger, consume_labels)
                if plan is None:
                    return None
                pipe.multi()
                sent = await _stage(deps, pipe, model, plan, cause)
                await pipe.execute()
            except BaseException as exc:
                if plan is not None and plan.feedback is not None:  # a batch nobody will ingest
                    plan.feedback[0].unlink(missing_ok=True)
                if isinstance(exc, WatchError):
                    continue
                raise
        deps.bus.publisher.sent(sent)
        _record(deps, model, plan)
        return plan.result
    deps.log.warning("window evaluation kept losing to other replicas", model=model.name, version=version)
    return None


async def _read_and_decide(
    deps: MonitorDeps,
    pipe: Pipeline,
    model: MonitoredModel,
    reference: Reference,
    version: str,
    trigger: Trigger,
    consume_labels: bool,
) -> _Plan | None:
    config, keys = model.config, ModelKeys(model.name)
    now = time.time()
    stored_policy = await pipe.get(keys.policy)
    length = await pipe.llen(keys.window(version))
    started = await pipe.hget(keys.window_started, version)
    since = int(await pipe.get(keys.labelled_since) or 0)
    if consume_labels and since < config.performance.min_labels:
        return None
    window_age = now - float(started) if started is not None else 0.0
    taken = config.window.rows_to_close(length, window_age, by_clock=trigger == "due")
    if taken == 0 and trigger != "labels":
        return None
    window_rows = await pipe.lrange(keys.window(version), 0, taken - 1) if taken else []
    labelled_rows = await pipe.lrange(keys.labelled, -LABELLED_SCAN * config.window.size, -1)
    feedback_rows = int(await pipe.llen(keys.feedback))
    policy = TriggerPolicy.restore(
        config, PolicyState.model_validate_json(stored_policy) if stored_policy else PolicyState()
    )
    labelled = labelled_frame(model, labelled_rows)
    inputs = WindowInputs(
        version=version,
        window=prediction_frame(model, window_rows),
        labelled=labelled.filter(labelled["model_version"] == version).tail(config.window.size),
        feedback_rows=feedback_rows,
        started=float(started) if started is not None else now,
    )
    result = await asyncio.to_thread(evaluate, model, policy, reference, inputs, now)
    plan = _Plan(inputs, taken, since if consume_labels else 0, policy, result)
    if result.decision.retrain and feedback_rows:
        rows = labelled_frame(model, await pipe.lrange(keys.feedback, 0, feedback_rows - 1))
        plan.feedback = await asyncio.to_thread(_write_feedback, deps, model, rows)
    return plan


def _write_feedback(deps: MonitorDeps, model: MonitoredModel, rows: Any) -> tuple[Path, int]:
    directory = deps.settings.effective_data_root / "feedback" / model.dataset
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"feedback-{utcnow().strftime('%Y%m%dT%H%M%S%f')}.parquet"
    feedback_batch(model, rows).write_parquet(path)
    return path, rows.height


async def _stage(
    deps: MonitorDeps, pipe: Pipeline, model: MonitoredModel, plan: _Plan, cause: Envelope[Any] | None
) -> list[Envelope[Any]]:
    """Queue the commit on ``pipe`` (in MULTI); returns the events it will publish."""
    keys, result, decision = ModelKeys(model.name), plan.result, plan.result.decision
    version = plan.inputs.version
    if plan.taken:
        pipe.ltrim(keys.window(version), plan.taken, -1)
        # The rest of the window (rows that arrived meanwhile) starts its own clock now.
        pipe.hset(keys.window_started, version, repr(time.time()))
    if plan.labels_consumed:
        pipe.decrby(keys.labelled_since, plan.labels_consumed)
    pipe.lpush(keys.history, result.to_json())
    pipe.ltrim(keys.history, 0, HISTORY - 1)
    pipe.incr(keys.evaluated)
    staged: list[Envelope[Any]] = []
    if decision.episode_started:
        announced = new_event(
            events.DRIFT_DETECTED,
            DriftDetected(
                model_name=model.name,
                model_version=version,
                window=result.window(),
                scores=result.scores,
                fired=decision.fired,
            ),
            cause=cause,
        )
        plan.policy.episode_event = announced.model_dump_json()
        staged.append(announced)
    if decision.retrain:
        staged += _retrain_events(pipe, model, plan, cause)
    pipe.set(keys.policy, plan.policy.state().model_dump_json())
    await deps.bus.publisher.stage(pipe, staged)
    return staged


def _retrain_events(
    pipe: Pipeline, model: MonitoredModel, plan: _Plan, cause: Envelope[Any] | None
) -> list[Envelope[Any]]:
    """The retrain a decision asks for: straight away, or after ingest stores the feedback rows."""
    result, episode = plan.result, plan.policy.episode_event
    # The retrain continues the episode's chain: it starts at the drift that called for it.
    origin = parse_event(episode, events.DRIFT_DETECTED) if episode else cause
    evidence = {**result.summary(), "episode_event_id": origin.event_id if origin else None}
    retrain = RetrainRequested(
        dataset=model.dataset,
        reason="; ".join(result.decision.fired) or "drift",
        evidence=finite(evidence),
        window_snapshots=model.config.retrain.window_snapshots,
    )
    if plan.feedback is None:
        return [new_event(events.RETRAIN_REQUESTED, retrain, cause=origin)]
    path, rows = plan.feedback
    pipe.ltrim(ModelKeys(model.name).feedback, rows, -1)
    request = new_event(
        events.INGEST_REQUESTED,
        IngestRequested(dataset=model.dataset, uri=str(path.resolve()), trigger_training=False),
        cause=origin,
    )
    pipe.hset(PENDING_KEY, request.event_id, retrain.model_dump_json())
    return [request]


def _record(deps: MonitorDeps, model: MonitoredModel, plan: _Plan) -> None:
    result, decision = plan.result, plan.result.decision
    metrics.record_window(result)
    if decision.retrain:
        metrics.RETRAINS.labels(model.name).inc()
    deps.log.info(
        "trigger decision",
        model=model.name,
        decision="retrain" if decision.retrain else "hold",
        fired=decision.fired,
        reasons=decision.reasons,
        model_version=result.model_version,
        performance_drop=result.performance_drop,
        feedback_rows=plan.feedback[1] if plan.feedback else 0,
    )


async def judge_labels(deps: MonitorDeps, model: MonitoredModel, cause: Envelope[Any] | None) -> None:
    """Once enough rows were labelled since the last check, judge each version they belong to."""
    min_labels = model.config.performance.min_labels
    if await deps.store.labelled_since(model.name) < min_labels:
        return
    versions = await deps.store.labelled_versions(model.name, min_labels)
    # The first evaluation takes the count of new labels; if another replica took it first, it judges.
    if versions and await evaluate_window(deps, model, versions[0], "labels", cause, consume_labels=True):
        for version in versions[1:]:
            await evaluate_window(deps, model, version, "labels", cause)


async def new_champion(deps: MonitorDeps, model: MonitoredModel) -> None:
    """A promotion: the policy starts over (its episode is the old model's); cooldown and cap stay."""
    keys = ModelKeys(model.name)
    for _ in range(COMMIT_ATTEMPTS):
        async with deps.store.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(keys.policy)
                stored = await pipe.get(keys.policy)
                state = PolicyState.model_validate_json(stored) if stored else PolicyState()
                policy = TriggerPolicy.restore(model.config, state)
                policy.new_champion()
                pipe.multi()
                pipe.set(keys.policy, policy.state().model_dump_json())
                await pipe.execute()
                return
            except WatchError:
                continue


async def retrain_on_feedback_stored(deps: MonitorDeps, event: Envelope[DataIngested]) -> None:
    """Ask for the retrain that waited for the snapshot ``event`` announces, if the monitor asked for it."""
    if event.causation_id is not None:
        await _release_retrain(deps, event.causation_id, event, refused=None)


async def retrain_without_refused_feedback(deps: MonitorDeps, letter: Envelope[DeadLetter]) -> None:
    """A feedback batch ingest gave up on (its request dead-lettered: rows failing the dataset's schema, a
    file gone) would leave its retrain waiting for ever. The drift still calls for it: it goes ahead on
    the data already stored, its reason and evidence saying why the feedback is not in it."""
    if letter.payload.stream == events.INGEST_REQUESTED and letter.causation_id is not None:
        await _release_retrain(deps, letter.causation_id, letter, refused=letter.payload.error)


async def _release_retrain(
    deps: MonitorDeps, request_id: str, cause: Envelope[Any], *, refused: str | None
) -> None:
    pending = await deps.store.redis.hget(PENDING_KEY, request_id)
    if pending is None:
        return  # not a feedback batch the monitor asked for, or released already
    retrain = RetrainRequested.model_validate_json(pending)
    if refused is not None:
        retrain = retrain.model_copy(
            update={
                "reason": f"{retrain.reason}; without its feedback batch, which ingest refused",
                "evidence": {**retrain.evidence, "feedback_refused": refused},
            }
        )
    # Emitted before it is forgotten: after a crash in between, the redelivered event emits it again with
    # the same derived event id, and the consumers' done-markers drop the copy.
    await deps.bus.emit(events.RETRAIN_REQUESTED, retrain, cause=cause)
    await deps.store.redis.hdel(PENDING_KEY, request_id)
    deps.log.info(
        "retrain requested", dataset=retrain.dataset, reason=retrain.reason, feedback_refused=refused
    )
