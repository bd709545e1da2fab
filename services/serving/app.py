"""Serving: a BentoML service answering predictions with the current champion, hot-swapped on promotion.

Run with ``bentoml serve services.serving.app:MeshServing`` (see bentofile.yaml). Each worker process
loads the ``champion`` alias at start, listens to ``model.promoted`` (a broadcast: every worker must
swap), and re-checks the alias every ``MESH_SERVING_RECONCILE_S`` in case an event was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import bentoml
import mlflow
from mlflow.tracking import MlflowClient
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.serving.handlers import (
    PREDICTIONS,
    LoadedModel,
    ModelHolder,
    PredictionSampler,
    RecordError,
    new_request_ids,
)
from shared import events
from shared.bus import MeshBus
from shared.events import Envelope
from shared.ml.modeling import limit_native_threads, load_model_config
from shared.runtime.logging import configure_logging, get_logger
from shared.runtime.settings import MeshSettings
from shared.runtime.telemetry import setup_tracing

log = get_logger("mesh.serving")


async def model_info(_: Request) -> JSONResponse:
    service: MeshServing = bentoml.get_current_service()
    loaded = service.holder.current
    if loaded is None:
        return JSONResponse(
            {"error": "no model is serving yet", "model": service.holder.name}, status_code=503
        )
    return JSONResponse(loaded.describe(), headers=loaded.headers)


async def healthz(_: Request) -> JSONResponse:
    service: MeshServing = bentoml.get_current_service()
    return JSONResponse(
        {"status": "alive", "service": "serving", "model_loaded": service.holder.current is not None}
    )


http_routes = Starlette(routes=[Route("/model", model_info), Route("/healthz", healthz)])


def _unavailable(holder: ModelHolder) -> JSONResponse:
    return JSONResponse({"error": f"no version of {holder.name} is serving yet"}, status_code=503)


def _bad_record(exc: RecordError) -> JSONResponse:
    return JSONResponse({"error": str(exc), "field": exc.field}, status_code=422)


@bentoml.asgi_app(http_routes, path="/")
@bentoml.service(name="mesh-serving", workers=MeshSettings().serving_workers, traffic={"timeout": 30})
class MeshServing:
    def __init__(self) -> None:
        self.settings = MeshSettings()
        configure_logging("serving", self.settings.log_level)
        limit_native_threads()  # for this worker's lifetime: the latency the registry's gate measured
        self.tracer_provider = setup_tracing("serving", self.settings)
        self.bus = MeshBus(self.settings, "serving", tracer_provider=self.tracer_provider)
        config = load_model_config(self.settings.config_dir, self.settings.serving_dataset)
        self.tracer = self.tracer_provider.get_tracer("mesh.serving")
        self.holder = ModelHolder(config.model_name, self.tracer)
        self.sampler = PredictionSampler(self.bus, self.settings.serving_sample_rate)
        self.client: MlflowClient | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self.bus.listen(events.MODEL_PROMOTED, self._on_promoted)

    async def _on_promoted(self, event: Envelope[Any]) -> None:
        if event.payload.model_name == self.holder.name and self.client is not None:
            await self.holder.sync_to_champion(self.client)

    async def _reconcile(self) -> None:
        """The first load (waiting for MLflow with backoff) and a periodic check of the alias."""
        assert self.client is not None
        delay = 0.5
        while True:
            try:
                await self.holder.sync_to_champion(self.client)
                delay = self.settings.serving_reconcile_s
            except Exception as exc:  # MLflow not up yet, or unreachable for a while
                log.warning("champion check failed", error=str(exc))
                delay = min(delay * 2, self.settings.serving_reconcile_s)
            await asyncio.sleep(delay)

    @bentoml.on_startup
    async def start(self) -> None:
        mlflow.set_tracking_uri(self.settings.effective_mlflow_uri)
        self.client = MlflowClient()
        # Listen first, then load: a promotion between the two is seen by the listener, one before
        # it by the load, so no window is left unobserved.
        await self.bus.start()
        await self.sampler.start()
        self._reconciler = asyncio.create_task(self._reconcile(), name="champion-reconciler")

    @bentoml.on_shutdown
    async def stop(self) -> None:
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
        await self.sampler.stop()
        await self.bus.stop()
        self.tracer_provider.shutdown()

    def __is_ready__(self) -> bool:
        return self.holder.current is not None and self.bus.started

    def _answer(self, loaded: LoadedModel, records: list[Any], where: str) -> list[dict[str, Any]]:
        frame = loaded.validate(records, where)
        predictions, scores = loaded.predict(frame)
        request_ids = new_request_ids(frame.height)
        self.sampler.offer(loaded, frame, predictions, scores, request_ids)
        PREDICTIONS.labels(loaded.name, loaded.version).inc(frame.height)
        return [
            {"request_id": rid, "prediction": int(p), "probability": float(s)}
            for rid, p, s in zip(request_ids, predictions, scores, strict=True)
        ]

    @bentoml.api
    async def predict(self, features: dict[str, Any]) -> dict[str, Any]:
        """One record of named fields -> prediction, probability, and the model (and lineage) behind it."""
        with self._request_span("/predict") as span:
            response = self._predict_one(features)
            span.set_attributes({"http.route": "/predict", "http.response.status_code": response.status_code})
            return response  # type: ignore[return-value]

    def _request_span(self, route: str) -> Any:
        # A root of its own: BentoML wraps every call in a span of its tracer, which is not sampled and
        # not exported; as a parent it would make ours unsampled too.
        return self.tracer.start_as_current_span(f"POST {route}", context=Context(), kind=SpanKind.SERVER)

    def _predict_one(self, features: dict[str, Any]) -> JSONResponse:
        loaded = self.holder.current  # read once: the request finishes on this model whatever swaps meanwhile
        if loaded is None:
            return _unavailable(self.holder)
        try:
            [result] = self._answer(loaded, [features], "features")
        except RecordError as exc:
            return _bad_record(exc)
        body = {**result, "model": loaded.provenance()}
        return JSONResponse(body, headers={**loaded.headers, "X-Request-ID": result["request_id"]})

    @bentoml.api
    async def predict_batch(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Many records in one call, scored in one vectorised model call."""
        with self._request_span("/predict_batch") as span:
            response = self._predict_many(records)
            span.set_attributes(
                {"http.route": "/predict_batch", "http.response.status_code": response.status_code}
            )
            return response  # type: ignore[return-value]

    def _predict_many(self, records: list[dict[str, Any]]) -> JSONResponse:
        loaded = self.holder.current
        if loaded is None:
            return _unavailable(self.holder)
        if not records:
            return JSONResponse(
                {"error": "records: at least one record is required", "field": "records"}, 422
            )
        try:
            results = self._answer(loaded, records, "records")
        except RecordError as exc:
            return _bad_record(exc)
        return JSONResponse({"predictions": results, "model": loaded.provenance()}, headers=loaded.headers)
