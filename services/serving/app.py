"""Serving: a BentoML service answering predictions with the champion of every declared model, each
hot-swapped on its promotion.

Run with ``bentoml serve services.serving.app:MeshServing`` (see bentofile.yaml) or ``mesh run serving``.
A request names its model (``{"model": ..., "features": ...}``; optional while exactly one is served).
Each worker process loads the ``champion`` alias of every declared model at start (up to
``MESH_SERVING_MAX_LOADED_MODELS``, the rest on demand), listens to ``model.promoted`` (a broadcast: every
worker must swap), and reconciles every ``MESH_SERVING_RECONCILE_S`` in case an event was missed or a
model was declared meanwhile. A champion that cannot be loaded leaves the old version serving and is
announced on ``model.swap_failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
from typing import Any, cast

import bentoml
from starlette.applications import Starlette

from services.serving import consumers, inference_protocol, routes
from services.serving.answers import Prediction, Predictions
from services.serving.batching import RecordBatcher
from services.serving.catalog import ModelCatalog
from services.serving.deps import ServingDeps
from services.serving.predictions import predict_many, predict_one, traced
from services.serving.refusals import PREDICTION_URLS, NamedRefusals, is_prediction_path
from services.serving.sampler import PredictionSampler
from shared import events
from shared.bus import MeshBus
from shared.ml.modeling import limit_native_threads
from shared.runtime.auth import ApiTokenGuard
from shared.runtime.logging import configure_logging, get_logger
from shared.runtime.mlflow_client import mlflow_client
from shared.runtime.settings import MeshSettings
from shared.runtime.stopping import STOP_LIMIT_S, finished_within
from shared.runtime.telemetry import setup_tracing


@bentoml.asgi_app(Starlette(routes=[*routes.ROUTES, *inference_protocol.ROUTES]), path="/")
# BentoML takes the worker count from the class declaration, so this one setting is read on import.
@bentoml.service(
    name="mesh-serving",
    workers=MeshSettings().serving_workers,
    traffic={"timeout": 30},
    # The mesh's own server span, metrics and structured logs cover the prediction routes: BentoML's access
    # log line and its (unsampled, unexported) span per request only cost time on the hot path.
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": PREDICTION_URLS},
)
class MeshServing:
    def __init__(self) -> None:
        settings = MeshSettings()
        configure_logging("serving", settings.log_level)
        limit_native_threads()  # for this worker's lifetime: the latency the registry's gate measured
        self.tracer_provider = setup_tracing("serving", settings)
        tracer = self.tracer_provider.get_tracer("mesh.serving")
        bus = MeshBus(settings, "serving", tracer_provider=self.tracer_provider)
        models = ModelCatalog(
            settings.config_dir, mlflow_client(settings), settings.serving_max_loaded_models, tracer
        )
        sampler = PredictionSampler(bus, settings.serving_sample_rate)
        self.deps = ServingDeps(
            settings=settings,
            bus=bus,
            tracer=tracer,
            log=get_logger("mesh.serving"),
            models=models,
            sampler=sampler,
            batcher=RecordBatcher(sampler, settings.serving_batch_max_records)
            if settings.serving_batch_max_records > 1
            else None,
        )
        bus.listen(events.MODEL_PROMOTED, functools.partial(consumers.on_model_promoted, self.deps))
        models.on_swap_failed = functools.partial(consumers.announce_swap_failure, self.deps)
        self._follower: asyncio.Task[None] | None = None

    @bentoml.on_startup
    async def start(self) -> None:
        # Listen first, then load: a promotion between the two is seen by the listener, one before
        # it by the load, so no window is left unobserved.
        await self.deps.bus.start()
        await self.deps.sampler.start()
        follow = self.deps.models.follow(self.deps.settings.serving_reconcile_s)
        self._follower = asyncio.create_task(follow, name="champion-reconciler")
        # BentoML's worker accepts connections once this hook returns. Returning after the champions are
        # loaded keeps a restarted worker's first requests waiting in the socket's backlog (the arbiter
        # holds it through the restart) instead of being refused 503 while the models load; bounded, as
        # MLflow may be down.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.deps.models.settled.wait(), self.deps.settings.startup_timeout_s)
        # What is alive now (libraries, models) lives as long as the worker: leaving it out of the
        # collector's full passes keeps those from stalling every request for a long heap walk.
        gc.collect()
        gc.freeze()

    @bentoml.on_shutdown
    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            await finished_within(self._follower, STOP_LIMIT_S)
        await self.deps.models.stop()
        if self.deps.batcher is not None:
            self.deps.batcher.stop()
        await self.deps.sampler.stop()
        await self.deps.bus.stop()
        self.tracer_provider.shutdown()

    def __is_ready__(self) -> bool:
        return self.deps.models.ready and self.deps.bus.started

    @bentoml.api
    async def predict(self, features: dict[str, Any], model: str | None = None) -> Prediction:
        """One record of named fields for the named model -> its answer (the label and each class's
        probability, or the value) and the model version (and lineage) behind it. ``model`` may be left
        out while exactly one model is served."""
        respond = functools.partial(predict_one, self.deps, model, features)
        return await traced(self.deps.tracer, "/predict", respond)  # type: ignore[return-value]

    @bentoml.api
    async def predict_batch(self, records: list[dict[str, Any]], model: str | None = None) -> Predictions:
        """Many records for the named model in one call, scored in one vectorised model call."""
        respond = functools.partial(predict_many, self.deps, model, records)
        return await traced(self.deps.tracer, "/predict_batch", respond)  # type: ignore[return-value]


# The decorators made the class a BentoML service: its APIs' own refusals (a body that does not fit their
# arguments) are put in the mesh's shape, naming the field, by a middleware around them.
SERVICE = cast("bentoml.Service[MeshServing]", MeshServing)
SERVICE.add_asgi_middleware(NamedRefusals, paths=frozenset(api.route for api in SERVICE.apis.values()))
# Predictions need MESH_API_TOKEN's bearer when it is set (read as BentoML reads the worker count: when the
# service is defined); the models' metadata, probes and documents stay open.
SERVICE.add_asgi_middleware(ApiTokenGuard, token=MeshSettings().api_token, guarded=is_prediction_path)
