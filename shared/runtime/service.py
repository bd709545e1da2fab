"""What every mesh service process shares: logging, tracing, the bus, and an HTTP face with
``/healthz`` (alive), ``/readyz`` (dependencies answer) and ``/metrics`` (Prometheus).

A service's ``app.py`` builds a :class:`ServiceRuntime` and the service's deps (a subclass of
:class:`ServiceDeps`), registers its module-level consumers and routes, and returns
:meth:`ServiceRuntime.asgi`. Consumers take their deps as first argument; routes find them with
:func:`deps_of`. Nothing connects until the ASGI lifespan starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Self, TypeVar

import httpx
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.bus import MeshBus
from shared.events import Envelope, P, Stream
from shared.runtime.logging import configure_logging, get_logger
from shared.runtime.settings import MeshSettings
from shared.runtime.telemetry import setup_tracing

HTTP_LATENCY = Histogram(
    "mesh_http_request_duration_seconds",
    "HTTP request latency by route and status",
    ["service", "method", "route", "status"],
)

ReadinessCheck = Callable[[], Awaitable[str | None]]
Hook = Callable[[], Awaitable[None]]


UNTRACED = {"/healthz", "/readyz", "/metrics"}  # probes and scrapes: metrics, but no trace noise

D = TypeVar("D", bound="ServiceDeps")


@dataclasses.dataclass(frozen=True)
class ServiceDeps:
    """What a service's consumers and routes are handed, explicitly: settings, the bus to publish on, a
    tracer and a logger. A service subclasses it with what else it needs (stores, an MLflow client)."""

    settings: MeshSettings
    bus: MeshBus
    tracer: Tracer
    log: Any

    @classmethod
    def of(cls, runtime: ServiceRuntime, **extra: Any) -> Self:
        return cls(
            settings=runtime.settings, bus=runtime.bus, tracer=runtime.tracer, log=runtime.log, **extra
        )


def deps_of(request: Request, kind: type[D]) -> D:
    """The deps :meth:`ServiceRuntime.asgi` attached to the app serving ``request``."""
    deps = request.app.state.deps
    if not isinstance(deps, kind):
        raise TypeError(f"this app carries {type(deps).__name__}, not {kind.__name__}")
    return deps


class _HttpTelemetry:
    """A server span (continuing the caller's W3C trace context) and a latency observation per request,
    both named by route template, not raw path, which would explode cardinality."""

    def __init__(self, app: ASGIApp, service: str, routes: Sequence[BaseRoute], tracer: Tracer) -> None:
        self.app, self.service, self.routes, self.tracer = app, service, routes, tracer

    def _template(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return getattr(route, "path", "other")
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        route, method = self._template(scope), scope["method"]

        async def send_with_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        span = contextlib.nullcontext() if route in UNTRACED else self._span(scope, method, route)
        try:
            with span as current:
                await self.app(scope, receive, send_with_status)
                if current is not None:
                    current.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        current.set_status(Status(StatusCode.ERROR))
        finally:
            HTTP_LATENCY.labels(self.service, method, route, str(status)).observe(
                time.perf_counter() - started
            )

    def _span(self, scope: Scope, method: str, route: str) -> Any:
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        return self.tracer.start_as_current_span(
            f"{method} {route}",
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "http.route": route,
                "url.path": scope["path"],
                "service.component": self.service,
            },
        )


class ServiceRuntime:
    def __init__(self, name: str, settings: MeshSettings | None = None) -> None:
        self.name = name
        self.settings = settings or MeshSettings()
        configure_logging(name, self.settings.log_level)
        self.log = get_logger(f"mesh.{name}")
        self.tracer_provider = setup_tracing(name, self.settings)
        self.tracer = self.tracer_provider.get_tracer(f"mesh.{name}")
        self.bus = MeshBus(self.settings, name, tracer_provider=self.tracer_provider)
        self._readiness: list[ReadinessCheck] = []
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []

    def readiness_check(self, check: ReadinessCheck) -> ReadinessCheck:
        """Register ``check``: it returns None when fine, else the reason the service is not ready."""
        self._readiness.append(check)
        return check

    def require_http(self, name: str, url: str) -> None:
        """Not ready while ``url`` (a dependency's health endpoint) does not answer 2xx."""

        async def check() -> str | None:
            try:
                async with httpx.AsyncClient(timeout=2.0) as client:
                    response = await client.get(url)
            except httpx.HTTPError as exc:
                return f"{name}: {url} unreachable ({type(exc).__name__})"
            return None if response.is_success else f"{name}: {url} answered {response.status_code}"

        self._readiness.append(check)

    def consume(
        self,
        stream: Stream[P],
        handler: Callable[[D, Envelope[P]], Awaitable[None]],
        deps: D,
    ) -> None:
        """Hand every event of ``stream`` (in this service's consumer group) to ``handler(deps, event)``."""
        self.bus.consume(stream, functools.partial(handler, deps))

    def consume_batch(
        self, stream: Stream[P], handler: Callable[[D, list[Envelope[P]]], Awaitable[None]], deps: D
    ) -> None:
        """High-volume streams: ``handler(deps, events)`` with many events per call (see MeshBus)."""
        self.bus.consume_batch(stream, functools.partial(handler, deps))

    def listen(
        self, stream: Stream[P], handler: Callable[[D, Envelope[P]], Awaitable[None]], deps: D
    ) -> None:
        """Every process of the service sees each new event of ``stream`` (a broadcast, see MeshBus)."""
        self.bus.listen(stream, functools.partial(handler, deps))

    def on_startup(self, hook: Hook) -> Hook:
        self._startup.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        self._shutdown.append(hook)
        return hook

    async def _healthz(self, _: Request) -> Response:
        return JSONResponse({"status": "alive", "service": self.name})

    async def _readyz(self, _: Request) -> Response:
        reasons = [] if await self.bus.ready() else ["bus: redis not reachable or bus not started"]
        for check in self._readiness:
            reason = await check()
            if reason:
                reasons.append(reason)
        body = {"status": "ready" if not reasons else "not ready", "service": self.name, "reasons": reasons}
        return JSONResponse(body, status_code=200 if not reasons else 503)

    async def _metrics(self, _: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(self, _: Any = None) -> AsyncIterator[None]:
        trace.set_tracer_provider(self.tracer_provider)
        await self.bus.start()
        for hook in self._startup:
            await hook()
        self.log.info("service started")
        try:
            yield
        finally:
            for hook in reversed(self._shutdown):
                await hook()
            await self.bus.stop()
            self.tracer_provider.shutdown()
            self.log.info("service stopped")

    def asgi(self, routes: Sequence[BaseRoute] = (), deps: ServiceDeps | None = None) -> Starlette:
        all_routes: list[BaseRoute] = [
            *routes,
            Route("/healthz", self._healthz),
            Route("/readyz", self._readyz),
            Route("/metrics", self._metrics),
        ]
        app = Starlette(routes=all_routes, lifespan=self.lifespan)
        app.state.deps = deps
        app.add_middleware(_HttpTelemetry, service=self.name, routes=all_routes, tracer=self.tracer)
        return app
