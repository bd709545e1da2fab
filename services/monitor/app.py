"""Monitor service wiring: ``predictions`` and ``labels`` in; ``drift.detected``, feedback batches and
``retrain.requested`` out; ``GET /drift`` and ``GET /drift/report`` for people.

When the trigger policy fires, the labelled live rows are ingested as a snapshot of the dataset
(``ingest.requested`` with ``trigger_training`` off), and once ingest announces it the monitor asks for
the retrain: the new model learns from the traffic that showed the drift, and the registry gate still
decides whether it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from prometheus_client import Counter, Gauge
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from services.monitor.handlers import Monitor, WindowResult, finite, reference_from_version
from services.monitor.policy import load_monitor_config
from services.monitor.report import render_report
from shared import events
from shared.events import (
    DriftDetected,
    Envelope,
    IngestRequested,
    LabelObserved,
    RetrainRequested,
    new_event,
    utcnow,
)
from shared.ml.datasets import load_schema
from shared.ml.features import load_feature_spec
from shared.runtime.service import ServiceRuntime
from shared.runtime.settings import MeshSettings

DRIFT_SCORE = Gauge("mesh_drift_score", "Latest drift score per feature and test", ["feature", "test"])
WINDOW_ACCURACY = Gauge("mesh_window_accuracy_ratio", "Accuracy on the latest labelled window", ["version"])
DECISIONS = Counter("mesh_monitor_decisions_total", "Trigger policy decisions", ["outcome"])
RETRAINS = Counter("mesh_retrains_triggered_total", "Retrains requested by the monitor", ["dataset"])
PENDING_KEY = "mesh:monitor:pending-retrains"  # ingest.requested event id -> the retrain to ask for
TICK_S = 5.0


def create_app(settings: MeshSettings | None = None) -> Starlette:
    runtime = ServiceRuntime("monitor", settings)
    settings = runtime.settings
    dataset = settings.serving_dataset
    config = load_monitor_config(settings.config_dir, dataset)
    monitor = Monitor(
        config, load_feature_spec(settings.config_dir, dataset), load_schema(settings.config_dir, dataset)
    )
    bus = runtime.bus
    state: dict[str, Any] = {"client": None, "episode": None, "ticker": None}

    async def ensure_reference(version: str) -> None:
        if version in monitor.references or state["client"] is None:
            return
        client: MlflowClient = state["client"]

        def fetch() -> Any:
            details = client.get_model_version(config.model_name, version)
            profile = mlflow.artifacts.load_dict(f"runs:/{details.run_id}/features/profile.json")
            return reference_from_version(details.tags or {}, profile, version)

        monitor.set_reference(await asyncio.to_thread(fetch))
        runtime.log.info("reference loaded", model=config.model_name, version=version)

    async def act(results: list[WindowResult], cause: Envelope[Any] | None) -> None:
        for result in results:
            for feature, tests in result.scores.items():
                for test, score in tests.items():
                    DRIFT_SCORE.labels(feature, test).set(score)
            if result.accuracy is not None:
                WINDOW_ACCURACY.labels(result.model_version).set(result.accuracy)
            decision = result.decision
            DECISIONS.labels("retrain" if decision.retrain else "hold").inc()
            runtime.log.info(
                "trigger decision",
                decision="retrain" if decision.retrain else "hold",
                fired=decision.fired,
                reasons=decision.reasons,
                model_version=result.model_version,
                performance_drop=result.performance_drop,
            )
            if decision.episode_started:
                payload = DriftDetected(
                    model_name=config.model_name,
                    model_version=result.model_version,
                    window=result.window(),
                    scores=result.scores,
                    fired=decision.fired,
                )
                state["episode"] = await bus.emit(events.DRIFT_DETECTED, payload, cause=cause)
            if decision.retrain:
                await request_retrain(result, state["episode"] or cause)

    async def request_retrain(result: WindowResult, cause: Envelope[Any] | None) -> None:
        evidence = {**result.summary(), "episode_event_id": cause.event_id if cause else None}
        retrain = RetrainRequested(
            dataset=dataset,
            reason="; ".join(result.decision.fired) or "drift",
            evidence=finite(evidence),
            window_snapshots=config.retrain.window_snapshots,
        )
        RETRAINS.labels(dataset).inc()
        feedback = await asyncio.to_thread(
            monitor.take_feedback, settings.effective_data_root / "feedback" / dataset
        )
        if feedback is None:
            await bus.emit(events.RETRAIN_REQUESTED, retrain, cause=cause)
            return
        path, rows = feedback
        request = await bus.emit(
            events.INGEST_REQUESTED,
            IngestRequested(dataset=dataset, uri=str(path.resolve()), trigger_training=False),
            cause=cause,
        )
        # Remembered in Redis, not in memory: a restart between the two steps must not lose the retrain.
        await bus.redis.hset(PENDING_KEY, request.event_id, retrain.model_dump_json())
        runtime.log.info("feedback sent to ingest before retraining", rows=rows, path=str(path))

    async def on_predictions(envelopes: list[Envelope[Any]]) -> None:
        records = [e.payload.model_dump() for e in envelopes if e.payload.model_name == config.model_name]
        if not records:
            return
        for version in {r["model_version"] for r in records}:
            await ensure_reference(version)
        results = await asyncio.to_thread(monitor.add_predictions, records, time.time())
        await act(results, envelopes[-1])

    async def on_labels(envelopes: list[Envelope[Any]]) -> None:
        labels = [{"request_id": e.payload.request_id, "label": e.payload.label} for e in envelopes]
        await act(await asyncio.to_thread(monitor.add_labels, labels, time.time()), envelopes[-1])

    async def on_data_ingested(event: Envelope[Any]) -> None:
        if event.causation_id is None:
            return
        pending = await bus.redis.hget(PENDING_KEY, event.causation_id)
        if pending is None:
            return  # not a snapshot this monitor asked for
        retrain = RetrainRequested.model_validate_json(pending)
        await bus.emit(events.RETRAIN_REQUESTED, retrain, cause=event)
        await bus.redis.hdel(PENDING_KEY, event.causation_id)
        runtime.log.info("retrain requested", dataset=dataset, reason=retrain.reason)

    async def on_promoted(event: Envelope[Any]) -> None:
        if event.payload.model_name == config.model_name:
            await ensure_reference(event.payload.version)
            monitor.policy.new_champion()

    async def tick() -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await act(await asyncio.to_thread(monitor.due, time.time()), None)
            except Exception:
                runtime.log.exception("window tick failed")

    @runtime.on_startup
    async def start() -> None:
        mlflow.set_tracking_uri(settings.effective_mlflow_uri)
        state["client"] = MlflowClient()
        state["ticker"] = asyncio.create_task(tick(), name="monitor-windows")

    @runtime.on_shutdown
    async def stop() -> None:
        if state["ticker"] is not None:
            state["ticker"].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await state["ticker"]

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
        await bus.publish_many(envelopes)
        return JSONResponse({"accepted": len(envelopes)}, status_code=202)

    async def drift(_: Request) -> JSONResponse:
        return JSONResponse(monitor.latest())

    async def report(_: Request) -> HTMLResponse:
        return HTMLResponse(await asyncio.to_thread(render_report, monitor))

    bus.consume_batch(events.PREDICTIONS, on_predictions)
    bus.consume_batch(events.LABELS, on_labels)
    bus.consume(events.DATA_INGESTED, on_data_ingested)
    bus.listen(events.MODEL_PROMOTED, on_promoted)
    runtime.require_http("mlflow", f"{settings.effective_mlflow_uri}/health")
    return runtime.asgi(
        [
            Route("/drift", drift),
            Route("/drift/report", report),
            Route("/labels", receive_labels, methods=["POST"]),
        ]
    )
