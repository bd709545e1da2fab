"""Answering prediction requests: the named model's loaded version read once, the records validated and
scored, the answer offered to the sampler and returned with the model (and lineage) behind it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Tracer
from starlette.responses import JSONResponse, Response

from services.serving.batching import answered
from services.serving.catalog import ModelLookupError
from services.serving.deps import ServingDeps
from services.serving.holder import LoadedModel
from services.serving.records import RecordError
from services.serving.refusals import refusal
from services.serving.sampler import PredictionSampler

AnyResponse = TypeVar("AnyResponse", bound=Response)


def _bad_record(deps: ServingDeps, exc: RecordError) -> JSONResponse:
    return JSONResponse({"error": str(exc), "field": exc.field}, 422, headers=deps.worker_header)


def answer(
    loaded: LoadedModel, sampler: PredictionSampler, records: list[Any], where: str
) -> list[dict[str, Any]]:
    """The records' answers, scored together; RecordError names the first record that does not fit."""
    frame = loaded.validate(records, where)
    return answered(loaded, sampler, frame, loaded.predict(frame))


async def predict_one(deps: ServingDeps, model: str | None, features: dict[str, Any]) -> JSONResponse:
    try:
        # Read once: the request finishes on this version whatever swaps or unloads meanwhile.
        loaded = await deps.models.find(model)
    except ModelLookupError as exc:
        return refusal(exc, deps.worker_header)
    try:
        if deps.batcher is None:
            [result] = answer(loaded, deps.sampler, [features], "features")
        else:
            result = await deps.batcher.answer(loaded, features)
    except RecordError as exc:
        return _bad_record(deps, exc)
    body = {**result, "model": loaded.provenance()}
    headers = {**loaded.headers, **deps.worker_header, "X-Request-ID": result["request_id"]}
    return JSONResponse(body, headers=headers)


async def predict_many(deps: ServingDeps, model: str | None, records: list[dict[str, Any]]) -> JSONResponse:
    try:
        loaded = await deps.models.find(model)
    except ModelLookupError as exc:
        return refusal(exc, deps.worker_header)
    if not records:
        empty = {"error": "records: at least one record is required", "field": "records"}
        return JSONResponse(empty, 422, headers=deps.worker_header)
    try:
        results = answer(loaded, deps.sampler, records, "records")
    except RecordError as exc:
        return _bad_record(deps, exc)
    body = {"predictions": results, "model": loaded.provenance()}
    return JSONResponse(body, headers={**loaded.headers, **deps.worker_header})


async def traced(tracer: Tracer, route: str, respond: Callable[[], Awaitable[AnyResponse]]) -> AnyResponse:
    """``respond()`` inside a server span named for ``route``, carrying the response status."""
    # A root of its own: BentoML wraps every call in a span of its tracer, which is not sampled and
    # not exported; as a parent it would make ours unsampled too.
    with tracer.start_as_current_span(f"POST {route}", context=Context(), kind=SpanKind.SERVER) as span:
        response = await respond()
        span.set_attributes({"http.route": route, "http.response.status_code": response.status_code})
        return response
