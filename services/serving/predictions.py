"""Answering prediction requests: the served model read once, the records validated and scored, the
answer offered to the sampler and returned with the model (and lineage) behind it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Tracer
from starlette.responses import JSONResponse

from services.serving.deps import ServingDeps
from services.serving.holder import LoadedModel, ModelHolder
from services.serving.metrics import PREDICTIONS
from services.serving.records import RecordError
from services.serving.sampler import PredictionSampler, new_request_ids


def _unavailable(holder: ModelHolder) -> JSONResponse:
    return JSONResponse({"error": f"no version of {holder.name} is serving yet"}, status_code=503)


def _bad_record(exc: RecordError) -> JSONResponse:
    return JSONResponse({"error": str(exc), "field": exc.field}, status_code=422)


def _answer(
    loaded: LoadedModel, sampler: PredictionSampler, records: list[Any], where: str
) -> list[dict[str, Any]]:
    frame = loaded.validate(records, where)
    predictions, scores = loaded.predict(frame)
    request_ids = new_request_ids(frame.height)
    sampler.offer(loaded, frame, predictions, scores, request_ids)
    PREDICTIONS.labels(loaded.name, loaded.version).inc(frame.height)
    return [
        {"request_id": rid, "prediction": int(p), "probability": float(s)}
        for rid, p, s in zip(request_ids, predictions, scores, strict=True)
    ]


def predict_one(deps: ServingDeps, features: dict[str, Any]) -> JSONResponse:
    loaded = deps.holder.current  # read once: the request finishes on this model whatever swaps meanwhile
    if loaded is None:
        return _unavailable(deps.holder)
    try:
        [result] = _answer(loaded, deps.sampler, [features], "features")
    except RecordError as exc:
        return _bad_record(exc)
    body = {**result, "model": loaded.provenance()}
    return JSONResponse(body, headers={**loaded.headers, "X-Request-ID": result["request_id"]})


def predict_many(deps: ServingDeps, records: list[dict[str, Any]]) -> JSONResponse:
    loaded = deps.holder.current
    if loaded is None:
        return _unavailable(deps.holder)
    if not records:
        return JSONResponse({"error": "records: at least one record is required", "field": "records"}, 422)
    try:
        results = _answer(loaded, deps.sampler, records, "records")
    except RecordError as exc:
        return _bad_record(exc)
    return JSONResponse({"predictions": results, "model": loaded.provenance()}, headers=loaded.headers)


def traced(tracer: Tracer, route: str, respond: Callable[[], JSONResponse]) -> JSONResponse:
    """``respond()`` inside a server span named for ``route``, carrying the response status."""
    # A root of its own: BentoML wraps every call in a span of its tracer, which is not sampled and
    # not exported; as a parent it would make ours unsampled too.
    with tracer.start_as_current_span(f"POST {route}", context=Context(), kind=SpanKind.SERVER) as span:
        response = respond()
        span.set_attributes({"http.route": route, "http.response.status_code": response.status_code})
        return response
