"""Reading a registered version from MLflow: in a child process while the worker serves requests.

Reading a version (MLflow's REST calls, the artifact download, skops rebuilding a few hundred arrays, each
header parsed in Python) is ~80 ms of CPU, plus ~35 ms of the MLflow server's. In a thread of the serving
worker it shares the GIL with the event loop, and on a busy machine it competes with the worker for cores:
requests queued behind it, and p99 in the hot-swap benchmark's swap window was 6x the steady p99. In a
child process at a lower CPU priority (services.serving.niceness) it takes the CPU the worker leaves idle;
the worker only unpickles the child's answer (its own child's: trusted, ~1 ms) and warms the model up.

The child starts on the first read that needs it and stops after ``idle_s`` without one, so an idle stack
holds no extra process; a new child spends ~3 s of (niced) CPU importing its libraries first. A worker that
serves nothing yet (at start) reads in a thread: no request can wait behind it there, and it pays no
process start. A child that dies (kill -9, out of memory) is replaced, and the read tried again once.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import mlflow
import polars as pl
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from services.serving.niceness import lower_priority
from shared.ml.features import FeaturePipeline
from shared.ml.modeling import ModelConfig, load_logged_model
from shared.runtime.logging import get_logger
from shared.runtime.mlflow_client import mlflow_client
from shared.runtime.settings import MeshSettings

log = get_logger("mesh.serving")


@dataclass(frozen=True)
class VersionParts:
    """One registered version as read from MLflow, before it is warmed up: what the child hands back."""

    version: str
    run_id: str
    tags: dict[str, str]
    model: Any = field(repr=False)
    # The logged input example's records, in the model's input columns; None: logged without one.
    example: list[dict[str, Any]] | None = field(repr=False)


class VersionReadFailed(Exception):
    """A read that failed in the child, carried back as the kind and message of what was raised there
    (an exception of MLflow's or skops' own does not always survive pickling)."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message
        super().__init__(kind, message)

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def read_version(client: MlflowClient, config: ModelConfig, version: str) -> VersionParts:
    """Download and deserialise one registered version of ``config``'s model; raises if it cannot."""
    name = config.model_name
    details = client.get_model_version(name, version)
    local = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}")
    model = load_logged_model(local, config)
    columns = FeaturePipeline.from_dict(model.named_steps["features"].pipeline).spec.input_columns
    example = Model.load(local).load_input_example(local)
    return VersionParts(
        version=str(version),
        run_id=details.run_id or "",
        tags=dict(details.tags or {}),
        model=model,
        # Through polars: pandas writes a missing value as NaN, which a request would send as null.
        example=None if example is None else pl.from_pandas(example).select(columns).to_dicts(),
    )


def read_in_child(settings: MeshSettings, config: ModelConfig, version: str) -> VersionParts:
    """read_version, run in the loader process: any failure comes back as VersionReadFailed."""
    try:
        return read_version(mlflow_client(settings), config, version)
    except Exception as exc:
        raise VersionReadFailed(type(exc).__name__, str(exc)) from None


class VersionReader:
    """Reads versions for one serving worker: in its child process (started on demand, stopped when idle)
    or, when asked or when ``idle_s`` is 0, in a thread."""

    def __init__(self, settings: MeshSettings, client: MlflowClient, idle_s: float) -> None:
        self.settings = settings
        self.client = client
        self.idle_s = idle_s
        self._pool: ProcessPoolExecutor | None = None
        self._reading = 0  # reads under way in the child
        self._idle_stop: asyncio.TimerHandle | None = None

    @property
    def child_running(self) -> bool:
        return self._pool is not None

    async def read(self, config: ModelConfig, version: str, *, in_child: bool) -> VersionParts:
        if not in_child or self.idle_s <= 0:
            return await asyncio.to_thread(read_version, self.client, config, version)
        self._reading += 1
        try:
            return await self._read_in_child(config, version)
        finally:
            self._reading -= 1
            self._schedule_idle_stop()

    async def _read_in_child(self, config: ModelConfig, version: str) -> VersionParts:
        # A loader found dead (killed, out of memory: at the read or while idle before it, which the pool
        # only notices late) is replaced and the read tried again, once: a read that kills two fails.
        for attempt in (1, 2):
            if self._pool is None:
                self._pool = self._new_pool()
            pool = self._pool
            try:
                # Submitted from a thread: the first submit starts the process and the pool's own thread,
                # and waits for that thread to start, which on a busy worker is tens of milliseconds.
                read = await asyncio.to_thread(pool.submit, read_in_child, self.settings, config, version)
                return await asyncio.wrap_future(read)
            except BrokenProcessPool:
                if self._pool is pool:
                    self._discard_pool()
                log.warning(
                    "model loader process died", model=config.model_name, version=version, attempt=attempt
                )
        raise VersionReadFailed("LoaderDied", "the loader process died twice while reading the version")

    def _new_pool(self) -> ProcessPoolExecutor:
        log.info("model loader process starting", idle_stop_s=self.idle_s)
        # spawn, never fork: the worker has threads (the event loop's executor, OpenMP, MLflow's) whose locks
        # a forked child would inherit held.
        return ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=lower_priority
        )

    def _schedule_idle_stop(self) -> None:
        """The child stops ``idle_s`` after the last read ends, unless another starts meanwhile."""
        if self._idle_stop is not None:
            self._idle_stop.cancel()
        self._idle_stop = asyncio.get_running_loop().call_later(self.idle_s, self._stop_if_idle)

    def _stop_if_idle(self) -> None:
        self._idle_stop = None
        if self._pool is not None and self._reading == 0:
            log.info("model loader process stopping: idle", idle_s=self.idle_s)
            self._discard_pool()

    def _discard_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def stop(self) -> None:
        if self._idle_stop is not None:
            self._idle_stop.cancel()
            self._idle_stop = None
        self._discard_pool()
