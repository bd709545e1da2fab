"""Adaptive batching of single-record predictions.

Records that arrive while a batch is being scored are scored together in the next one, in one vectorised
model call, and each is answered (or refused, naming its field) on its own. Nothing waits to fill a
batch: a record that finds the scorer idle is scored at once, so a lone client sees the latency it would
see unbatched, while concurrent clients share the model's per-call cost (building the frame, the feature
transform, the estimator's input checks), which for a single record is most of the work. Batches are
scored in one worker thread (the native thread limit the gate measured latency under), so the event loop
keeps reading requests, which then join the next batch.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import polars as pl

from services.serving.holder import LoadedModel
from services.serving.metrics import BATCHED_RECORDS, PREDICTIONS
from services.serving.sampler import PredictionSampler, new_request_ids
from shared.ml.modeling import limit_native_threads
from shared.ml.tasks import Outputs


def answered(
    loaded: LoadedModel, sampler: PredictionSampler, frame: pl.DataFrame, outputs: Outputs
) -> list[dict[str, Any]]:
    """Each scored record's answer under a new request id; the records offered to the sampler, counted."""
    request_ids = new_request_ids(frame.height)
    sampler.offer(loaded, frame, outputs, request_ids)
    PREDICTIONS.labels(loaded.name, loaded.version).inc(frame.height)
    return [{"request_id": rid, **outputs.answer(row)} for row, rid in enumerate(request_ids)]


@dataclass(frozen=True)
class _Waiting:
    loaded: LoadedModel  # the version the request read: a batch is scored by one version
    record: Any
    answer: asyncio.Future[dict[str, Any]]


def _score(loaded: LoadedModel, records: list[Any]) -> tuple[pl.DataFrame, Outputs | None, list[Any]]:
    frame, refusals = loaded.validate_each(records, "features")
    return frame, loaded.predict(frame) if frame.height else None, refusals


class RecordBatcher:
    """Scores the single records of ``POST /predict`` in batches of at most ``max_records``."""

    def __init__(self, sampler: PredictionSampler, max_records: int) -> None:
        self._sampler = sampler
        self._max_records = max_records
        self._waiting: list[_Waiting] = []
        self._scoring: asyncio.Task[None] | None = None
        # OpenMP's thread limit is per thread: the scorer sets its own, as the worker's main thread did.
        self._thread = ThreadPoolExecutor(1, "scorer", initializer=limit_native_threads)

    async def answer(self, loaded: LoadedModel, record: Any) -> dict[str, Any]:
        """``record``'s answer from ``loaded``, or RecordError naming its bad field (``features.age``)."""
        answer = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(loaded, record, answer))
        if self._scoring is None or self._scoring.done():
            self._scoring = asyncio.create_task(self._score_waiting(), name="record-batcher")
        return await answer

    def stop(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)

    async def _score_waiting(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            batch = self._waiting[: self._max_records]
            del self._waiting[: self._max_records]
            # Grouped by the model version each request read: one model call per version, so records of
            # several models, or of both sides of a swap, are each scored by the version they read.
            groups: dict[int, list[_Waiting]] = {}
            for waiting in batch:
                groups.setdefault(id(waiting.loaded), []).append(waiting)
            for group in groups.values():
                loaded = group[0].loaded
                records = [waiting.record for waiting in group]
                BATCHED_RECORDS.labels(loaded.name).observe(len(records))
                try:
                    if len(batch) == 1:  # a lone record: the hop to the thread would cost more than it saves
                        frame, outputs, refusals = _score(loaded, records)
                    else:
                        frame, outputs, refusals = await loop.run_in_executor(
                            self._thread, _score, loaded, records
                        )
                    answers = iter(answered(loaded, self._sampler, frame, outputs) if outputs else [])
                except Exception as exc:  # the model failed: each request fails, as it would have alone
                    for waiting in group:
                        if not waiting.answer.done():
                            waiting.answer.set_exception(exc)
                    continue
                for waiting, refusal in zip(group, refusals, strict=True):
                    result = next(answers) if refusal is None else None
                    if waiting.answer.done():  # the request was cancelled meanwhile
                        continue
                    if refusal is not None:
                        waiting.answer.set_exception(refusal)
                    else:
                        waiting.answer.set_result(result)  # type: ignore[arg-type]
