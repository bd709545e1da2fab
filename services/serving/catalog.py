"""The models one serving worker answers for: every declared model whose ``champion`` alias names a
version, each in a holder of its own, at most ``max_loaded`` of them in memory.

The declared models are re-read from ``<config_dir>/models/`` on every reconcile, on a promotion of a
model not known yet and on a request naming one (at most once a second), so a model declared or first
promoted while the server runs is served without a restart. Past the bound the least recently used model
unloads; a request for a model not in memory starts its load in the background and is told to retry.
A champion that cannot be loaded is reported once per run of failed loads (``on_swap_failed``) and shown by
``status``; the model keeps answering with the version it had.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Tracer

from services.serving.holder import LoadedModel, ModelHolder, SwapFailure, version_provenance
from services.serving.metrics import MODEL_EVICTIONS
from shared.events import Envelope
from shared.ml.config_files import ConfigProblem
from shared.ml.modeling import ModelConfig, valid_model_configs
from shared.runtime.logging import get_logger
from shared.runtime.stopping import STOP_LIMIT_S, finished_within

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = get_logger("mesh.serving")

FIRST_RETRY_S = 0.5  # the first reconcile retries fast: at start, MLflow is often still coming up
REDISCOVER_EVERY_S = 1.0  # requests naming unknown models re-read the declared models at most this often

# Told of a champion that could not be loaded, with the promotion that asked for it (None: a reconcile).
SwapFailureHandler = Callable[[ModelHolder, SwapFailure, Envelope[Any] | None], Awaitable[None]]


class ModelLookupError(LookupError):
    """A request's model cannot answer it: ``model`` is what was asked for (None: not named)."""

    def __init__(self, message: str, model: str | None, served: list[str]) -> None:
        self.model = model
        self.served = served
        super().__init__(message)


class ModelNotNamed(ModelLookupError):
    """The request names no model, and more (or fewer) than one is served."""


class UnknownModel(ModelLookupError):
    """The request names a model that is not declared."""


class ModelUnavailable(ModelLookupError):
    """A declared model no version of which is in memory: ``loading`` if one is on its way."""

    def __init__(self, message: str, model: str, served: list[str], *, loading: bool) -> None:
        self.loading = loading
        super().__init__(message, model, served)


class ModelCatalog:
    """Holders of the declared models, by name; the requests' way to the loaded version of one."""

    def __init__(
        self, config_dir: Path, client: MlflowClient, max_loaded: int, tracer: Tracer | None = None
    ) -> None:
        self.config_dir = config_dir
        self.client = client
        self.max_loaded = max_loaded
        self.holders: dict[str, ModelHolder] = {}
        self._tracer = tracer
        self._loads: dict[str, asyncio.Task[None]] = {}  # on-demand loads, one per model at a time
        # On-demand loads bring in one model at a time, so that requests for many models not in memory
        # hold at most one model beyond the bound while it loads (a swap of a loaded model replaces it).
        self._admission = asyncio.Semaphore(1)
        self._tasks: set[asyncio.Task[None]] = set()  # every background sync, for stop()
        self._rediscovered_at = time.monotonic()
        self.on_swap_failed: SwapFailureHandler | None = None
        self.settled = asyncio.Event()  # the first reconcile is done: the champions are loaded, or tried
        self.declare(*valid_model_configs(config_dir))

    # --- what is declared and served -----------------------------------------------------------------

    def declare(self, configs: list[ModelConfig], problems: list[ConfigProblem]) -> list[ModelHolder]:
        """Hold the models of ``configs``; the holders added. Models no longer declared are let go, unless
        a file has ``problems``: it may be one of them mid-edit, and keeps serving as it was meanwhile."""
        for problem in problems:
            log.error("model config refused", file=problem.file, field=problem.field, error=problem.message)
        names = {config.model_name for config in configs}
        for gone in [name for name in self.holders if name not in names and not problems]:
            self.holders.pop(gone).unload()
            log.info("model no longer declared: not served", model=gone)
        added = []
        for config in configs:
            if (known := self.holders.get(config.model_name)) is not None:
                known.config = config  # an edited configuration applies to the next load
            else:
                holder = ModelHolder(config, self._tracer)
                self.holders[config.model_name] = holder
                added.append(holder)
                log.info("model declared", model=config.model_name, dataset=config.dataset)
        return added

    async def rediscover(self) -> list[ModelHolder]:
        """Re-read the declared models; the holders added."""
        self._rediscovered_at = time.monotonic()
        try:
            configs, problems = await asyncio.to_thread(valid_model_configs, self.config_dir)
        except OSError as exc:
            log.warning("could not re-read the declared models", error=str(exc))
            return []
        return self.declare(configs, problems)

    @property
    def served(self) -> list[ModelHolder]:
        return [holder for holder in self.holders.values() if holder.served]

    def served_names(self) -> list[str]:
        return [holder.name for holder in self.served]

    @property
    def loaded(self) -> list[ModelHolder]:
        return [holder for holder in self.holders.values() if holder.current is not None]

    @property
    def ready(self) -> bool:
        """Something can be answered: at least one model is in memory."""
        return any(holder.current is not None for holder in self.holders.values())

    def default(self) -> ModelHolder:
        """The model a request that names none means: the only one served (or declared, before any is)."""
        served = self.served
        if len(served) == 1:
            return served[0]
        if not served and len(self.holders) == 1:
            return next(iter(self.holders.values()))
        names = self.served_names()
        raise ModelNotNamed(
            f"model: name the model to use (served: {', '.join(names) or 'none yet'})", None, names
        )

    async def holder(self, name: str | None) -> ModelHolder:
        """The holder of ``name`` (the default if None); a name not declared re-reads the configs first."""
        if name is None:
            return self.default()
        holder = self.holders.get(name)
        if holder is None and time.monotonic() - self._rediscovered_at >= REDISCOVER_EVERY_S:
            await self.rediscover()  # a model found so is loaded on its first request, as any other
            holder = self.holders.get(name)
        if holder is None:
            names = self.served_names()
            raise UnknownModel(
                f"model {name!r} is not served (served: {', '.join(names) or 'none yet'})", name, names
            )
        return holder

    # --- answering a request -------------------------------------------------------------------------

    async def find(self, name: str | None) -> LoadedModel:
        """The loaded version a request for ``name`` is answered with, read once; or ModelLookupError."""
        holder = await self.holder(name)
        loaded = holder.current
        if loaded is not None:
            holder.touch()
            return loaded
        if holder.checked and holder.champion is None:
            raise ModelUnavailable(
                f"no version of {holder.name} is serving yet", holder.name, self.served_names(), loading=False
            )
        self.ensure_loaded(holder)
        raise ModelUnavailable(
            f"model {holder.name!r} is loading: retry shortly", holder.name, self.served_names(), loading=True
        )

    def ensure_loaded(self, holder: ModelHolder) -> None:
        """Start loading ``holder``'s champion in the background, unless a load of it is under way."""
        running = self._loads.get(holder.name)
        if running is None or running.done():
            self._loads[holder.name] = self._spawn(holder, load=True, admitted=True)

    # --- following the registry ----------------------------------------------------------------------

    async def on_promoted(self, name: str, cause: Envelope[Any] | None = None) -> None:
        """A promotion of ``name`` (announced by ``cause``): its holder syncs in the background, beside
        any other model's swap."""
        if name not in self.holders:
            await self.rediscover()
        holder = self.holders.get(name)
        if holder is None:
            log.info("promotion of a model not declared here: not served", model=name)
            return
        self._spawn(holder, load=self._room_for(holder), cause=cause)

    async def reconcile(self) -> bool:
        """Re-read the declared models and bring each to its champion: a loaded one swaps if the alias
        moved, one not in memory loads while the bound has room. False if any model could not be checked."""
        await self.rediscover()
        checked = True
        for holder in list(self.holders.values()):
            try:
                await self._sync(holder, load=self._room_for(holder))
            except Exception as exc:  # MLflow not up yet, or unreachable for a while
                log.warning("champion check failed", model=holder.name, error=str(exc))
                checked = False
        return checked

    async def follow(self, every_s: float) -> None:
        """Reconcile now (retrying fast while MLflow is not answering), then every ``every_s`` in case a
        promotion event was missed. Runs until cancelled; ``settled`` is set after the first reconcile."""
        delay = FIRST_RETRY_S
        while True:
            checked = await self.reconcile()
            self.settled.set()
            delay = every_s if checked else min(delay * 2, every_s)
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await finished_within(asyncio.gather(*self._tasks, return_exceptions=True), STOP_LIMIT_S)

    # --- residency -----------------------------------------------------------------------------------

    def _room_for(self, holder: ModelHolder) -> bool:
        """Whether a sync may load ``holder``: it is in memory already, or the bound has room."""
        return holder.current is not None or len(self.loaded) < self.max_loaded

    async def _sync(self, holder: ModelHolder, *, load: bool, cause: Envelope[Any] | None = None) -> None:
        before = holder.failed
        if await holder.sync_to_champion(self.client, load=load):
            self._evict_beyond_bound(keep=holder)
        failed = holder.failed
        # Reported once per run of failures: the reconcile retries a broken champion every round.
        if failed is not None and failed is not before and failed.attempts == 1 and self.on_swap_failed:
            await self.on_swap_failed(holder, failed, cause)

    def _spawn(
        self,
        holder: ModelHolder,
        *,
        load: bool,
        admitted: bool = False,
        cause: Envelope[Any] | None = None,
    ) -> asyncio.Task[None]:
        """``holder`` synced in a background task; ``admitted``: one such load at a time (see _admission)."""

        async def sync() -> None:
            try:
                if admitted:
                    async with self._admission:
                        await self._sync(holder, load=load, cause=cause)
                else:
                    await self._sync(holder, load=load, cause=cause)
            except Exception as exc:
                log.warning("champion sync failed", model=holder.name, error=str(exc))

        task = asyncio.create_task(sync(), name=f"sync-{holder.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _evict_beyond_bound(self, keep: ModelHolder) -> None:
        """Unload the least recently used models (never ``keep``, just loaded) until the bound holds."""
        loaded = [holder for holder in self.loaded if holder is not keep]
        loaded.sort(key=lambda holder: holder.last_used)
        for victim in loaded[: max(0, len(loaded) + 1 - self.max_loaded)]:
            victim.unload()
            MODEL_EVICTIONS.labels(victim.name).inc()
            log.info("model unloaded (least recently used)", model=victim.name, bound=self.max_loaded)

    def status(self, holder: ModelHolder) -> dict[str, Any]:
        """One served model as GET /models lists it: its version, provenance and whether it is loaded."""
        loaded = holder.current
        provenance = loaded.provenance() if loaded is not None else None
        if provenance is None and holder.champion is not None:
            provenance = version_provenance(holder.name, holder.champion)
        return {
            "name": holder.name,
            "dataset": holder.dataset,
            "version": holder.version,
            "champion_version": str(holder.champion.version) if holder.champion is not None else None,
            "loaded": loaded is not None,
            "provenance": provenance,
            "swap_failed": holder.failed.describe() if holder.failed is not None else None,
        }
