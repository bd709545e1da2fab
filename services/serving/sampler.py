"""Prediction sampling: a share of the answered records published to ``predictions``, off the response
path, for the monitor to join with labels."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl

from services.serving.holder import LoadedModel
from services.serving.metrics import PREDICTIONS_DROPPED
from shared import events
from shared.bus import MeshBus
from shared.events import PredictionMade, new_event, utcnow
from shared.ml.tasks import Outputs, python_value
from shared.runtime.logging import get_logger
from shared.runtime.stopping import STOP_LIMIT_S, finished_within

log = get_logger("mesh.serving")


@dataclass(frozen=True)
class _Answered:
    """One answered request, as the sampler queues it: references only, no copies or conversions."""

    loaded: LoadedModel
    frame: pl.DataFrame
    outputs: Outputs
    request_ids: list[str]
    at: datetime

    def records(self, rate: float) -> list[PredictionMade]:
        scores = self.outputs.positive_scores
        return [
            PredictionMade(
                request_id=self.request_ids[i],
                model_name=self.loaded.name,
                model_version=self.loaded.version,
                features=row,
                prediction=python_value(self.outputs.predictions[i]),
                probability=float(scores[i]) if scores is not None else None,
                predicted_at=self.at,
            )
            for i, row in enumerate(self.frame.iter_rows(named=True))
            if rate >= 1 or random.random() < rate
        ]


@dataclass
class PredictionSampler:
    """Publishes a sample of predictions to ``predictions`` off the response path.

    A request only queues a reference to what it answered; a background task samples, builds the
    records and writes them in pipelined batches. Past ``capacity`` queued records, answers are
    dropped and counted, rather than slowing or failing requests.
    """

    bus: MeshBus
    rate: float
    capacity: int = 10_000
    batch: int = 500
    _queue: asyncio.Queue[_Answered] = field(init=False)
    _queued: int = field(default=0, init=False)  # records waiting, across queued answers
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _stopping: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue()

    def offer(
        self,
        loaded: LoadedModel,
        frame: pl.DataFrame,
        outputs: Outputs,
        request_ids: list[str],
    ) -> None:
        if self.rate <= 0:
            return
        if self._queued + frame.height > self.capacity:
            PREDICTIONS_DROPPED.inc(frame.height)
            return
        self._queued += frame.height
        self._queue.put_nowait(_Answered(loaded, frame, outputs, request_ids, utcnow()))

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._drain(), name="prediction-sampler")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await finished_within(asyncio.gather(self._task, return_exceptions=True), STOP_LIMIT_S)
        while not self._queue.empty():
            await self._flush(self._take_batch())

    def _take(self, answered: _Answered) -> list[PredictionMade]:
        self._queued -= answered.frame.height
        return answered.records(self.rate)

    def _take_batch(self, first: _Answered | None = None) -> list[PredictionMade]:
        records = self._take(first) if first is not None else []
        while not self._queue.empty() and len(records) < self.batch:
            records.extend(self._take(self._queue.get_nowait()))
        return records

    async def _drain(self) -> None:
        while not self._stopping:  # a flag too: a cancel lost in a publish (shared.runtime.stopping)
            await self._flush(self._take_batch(await self._queue.get()))

    async def _flush(self, records: list[PredictionMade]) -> None:
        if not records:
            return
        try:
            await self.bus.publish_many([new_event(events.PREDICTIONS, record) for record in records])
        except Exception:
            PREDICTIONS_DROPPED.inc(len(records))
            log.exception("could not publish prediction records", count=len(records))


def new_request_ids(count: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(count)]
