"""What every mesh service process shares: logging, tracing, the bus, and an HTTP face with
``/healthz`` (alive), ``/readyz`` (dependencies answer) and ``/metrics`` (Prometheus).

A service's ``app.py`` builds a :class:`ServiceRuntime` and the service's deps (a subclass of
:class:`ServiceDeps`), registers its module-level consumers and its routes (a FastAPI ``APIRouter``), and
returns :meth:`ServiceRuntime.asgi`: a FastAPI app titled ``retrain-mesh <service>`` that serves
``/openapi.json`` and ``/docs``. Consumers take their deps as first argument; routes take them as a
dependency (:func:`provide`, or :func:`deps_of` given the request). Nothing connects until the ASGI
lifespan starts.

Every refusal is ``{"error": ..., "field": ...}``: a body that does not fit its model (:class:`JsonBody`)
answers 422 naming the first bad field in dotted form (``labels[0].request_id``) and listing every one
under ``errors``; a body that is not JSON at all answers 400 naming ``body``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import importlib.metadata
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Generic, Self, TypeVar

import httpx
from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from pydantic import BaseModel, Field, ValidationError
from pydantic.json_schema import models_json_schema
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.bus import MeshBus
from shared.events import Envelope, P, Stream
from shared.runtime.logging import configure_logging, get_logger
from shared.runtime.settings import MeshSettings
from shared.runtime.stopping import finished_within
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


def provide(kind: type[D]) -> Callable[[Request], Awaitable[D]]:
    """A FastAPI dependency handing a route the app's deps:
    ``Annotated[IngestDeps, Depends(provide(IngestDeps))]``."""

    async def dependency(request: Request) -> D:
        return deps_of(request, kind)

    return dependency


# --- the HTTP contract every service shares ----------------------------------------------------------

M = TypeVar("M", bound=BaseModel)
BODY_LOCATIONS = ("body", "path", "query", "header", "cookie")
COMPONENT_REF = "#/components/schemas/{model}"


class ErrorBody(BaseModel):
    """A refusal: what is wrong, and the field, header or path parameter to blame when one is."""

    error: str = Field(description="what is wrong, in words")
    field: str | None = Field(
        default=None, description="the field to blame, dotted (`labels[0].request_id`), or a header name"
    )


class FieldError(BaseModel):
    field: str = Field(description="the bad field, dotted (`labels[0].request_id`), or `body` as a whole")
    error: str = Field(description="what is wrong with it")
    type: str = Field(description="the kind of problem (pydantic's error type, e.g. `missing`)")


class InvalidRequest(BaseModel):
    """A request whose body is not JSON (400), or that does not fit the route's model (422)."""

    error: str = Field(description="the first bad field and what is wrong with it")
    field: str = Field(description="the first bad field, dotted")
    errors: list[FieldError] = Field(description="every bad field")


INVALID_BODY: dict[int | str, dict[str, Any]] = {
    400: {"model": InvalidRequest, "description": "the body is not JSON"},
    422: {
        "model": InvalidRequest,
        "description": "the request does not fit its model; every bad field named",
    },
}


def dotted(loc: Sequence[str | int]) -> str:
    """A validation error's location as one field name: ``("body", "labels", 0, "label")`` is
    ``labels[0].label``; the body as a whole is ``body``."""
    parts = list(loc)
    if parts and parts[0] in BODY_LOCATIONS:
        parts = parts[1:]
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name or "body"


class JsonBody(Generic[M]):
    """A route's JSON body, validated as ``model``: ``Annotated[Model, Depends(JsonBody(Model))]``.

    Unlike a FastAPI body parameter it is parsed whatever content type the body came with (``curl -d``
    says form-encoded) and only when its turn among the route's dependencies comes, so one declared
    before it (the registry's bearer token) refuses first. :class:`ServiceApp` documents it in the
    OpenAPI as the route's ``application/json`` request body."""

    def __init__(self, model: type[M]) -> None:
        self.model = model

    async def __call__(self, request: Request) -> M:
        raw = await request.body()
        try:
            data = json.loads(raw)
        except RecursionError:  # nested deeper than the parser goes: not a body anyone means
            error = {"type": "json_invalid", "loc": ("body",), "msg": "not valid JSON (nested too deeply)"}
            raise RequestValidationError([error]) from None
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
            error = {"type": "json_invalid", "loc": ("body",), "msg": f"not valid JSON ({exc})"}
            raise RequestValidationError([error]) from None
        try:
            return self.model.model_validate(data)
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
            raise RequestValidationError(errors) from None


class Refusal(Exception):
    """Raised by a route or dependency to answer ``response`` at once (a 401 before the body is read)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _message(error: dict[str, Any]) -> str:
    if error.get("type") in ("model_type", "model_attributes_type", "dict_type"):
        return "a JSON object is required"  # not pydantic's "a valid dictionary or instance of <Class>"
    return str(error.get("msg", ""))


async def _invalid_request(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        FieldError(field=dotted(e.get("loc", ())), error=_message(e), type=str(e.get("type", "")))
        for e in exc.errors()
    ] or [FieldError(field="body", error="invalid request", type="invalid")]
    first = errors[0]
    body = InvalidRequest(error=f"{first.field}: {first.error}", field=first.field, errors=errors)
    return JSONResponse(body.model_dump(), status_code=400 if first.type == "json_invalid" else 422)


async def _http_error(_: Request, exc: Exception) -> Response:
    """Unknown paths, wrong methods: ``{"error": ...}`` like every other refusal (and ``Allow`` on 405)."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _refused(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refusal)
    return exc.response


async def _redis_unavailable(_: Request, exc: Exception) -> Response:
    """Redis gone (restarting, failing over): the request can succeed later, so 503 and when to retry,
    not a 500 that reads as a bug. Nothing was announced: ingest marks a batch announced only after its
    event is on the stream, so the same upload again completes it."""
    return JSONResponse(
        {"error": f"the event stream is unavailable, retry shortly ({type(exc).__name__})"},
        status_code=503,
        headers={"retry-after": "1"},
    )


def _json_bodies(dependant: Dependant) -> Iterator[JsonBody[Any]]:
    for sub in dependant.dependencies:
        if isinstance(sub.call, JsonBody):
            yield sub.call
        yield from _json_bodies(sub)


class ServiceApp(FastAPI):
    """A service's FastAPI app. Its OpenAPI shows the mesh's refusals, not FastAPI's: the bodies routes read
    with :class:`JsonBody` (with their 400 and 422), and :class:`InvalidRequest` wherever FastAPI would
    document its own validation error."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema:
            return self.openapi_schema
        schema = super().openapi()
        bodies = [
            (route, body)
            for route in self.routes
            if isinstance(route, APIRoute) and route.include_in_schema
            for body in _json_bodies(route.dependant)
        ]
        refs, definitions = models_json_schema(
            [(InvalidRequest, "validation"), *((body.model, "validation") for _, body in bodies)],
            ref_template=COMPONENT_REF,
        )
        invalid = {"content": {"application/json": {"schema": refs[(InvalidRequest, "validation")]}}}
        fastapis = {"$ref": COMPONENT_REF.format(model="HTTPValidationError")}
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                answers = operation.get("responses", {})
                said = answers.get("422", {}).get("content", {}).get("application/json", {}).get("schema")
                if said == fastapis:
                    answers["422"] = {"description": INVALID_BODY[422]["description"], **invalid}
        for route, body in bodies:
            for method in route.methods or ():
                operation = schema["paths"][route.path_format][method.lower()]
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": refs[(body.model, "validation")]}},
                }
                for status in (400, 422):
                    description = INVALID_BODY[status]["description"]
                    operation["responses"].setdefault(str(status), {"description": description, **invalid})
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if bodies or _refers_to(schema, InvalidRequest.__name__):
            for name, definition in definitions.get("$defs", {}).items():
                components.setdefault(name, definition)
        for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's, once nothing refers to them
            fastapi_definition = components.pop(name, None)
            if fastapi_definition is not None and _refers_to(schema, name):
                components[name] = fastapi_definition
        if not components:
            del schema["components"]["schemas"]
            if not schema["components"]:
                del schema["components"]
        self.openapi_schema = schema
        return schema


def _refers_to(schema: dict[str, Any], name: str) -> bool:
    return json.dumps(COMPONENT_REF.format(model=name)) in json.dumps(schema)


class Liveness(BaseModel):
    status: str = Field(description="`alive`", examples=["alive"])
    service: str


class Readiness(BaseModel):
    status: str = Field(description="`ready` (200) or `not ready` (503)", examples=["ready"])
    service: str
    reasons: list[str] = Field(description="why it is not ready: each dependency that does not answer")


def _head_of(route: APIRoute) -> APIRoute:
    """``route`` answering HEAD (the same handler; the server sends no body), left out of the OpenAPI."""
    head = copy.copy(route)
    head.methods = {"HEAD"}
    head.include_in_schema = False
    return head


def _name_of(hook: Hook) -> str:
    return getattr(hook, "__qualname__", repr(hook))


def _version() -> str:
    try:
        return importlib.metadata.version("retrain-mesh")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class _HttpTelemetry:
    """A server span (continuing the caller's W3C trace context) and a latency observation per request,
    both named by route template, not raw path, which would explode cardinality."""

    def __init__(self, app: ASGIApp, service: str, routes: Sequence[BaseRoute], tracer: Tracer) -> None:
        self.app, self.service, self.routes, self.tracer = app, service, routes, tracer
        # Each route's success series exported from the start: a series born at its first request holds
        # that request in its first sample, where rate() cannot see it, so the first minute of a route's
        # traffic would show on no dashboard.
        for route in routes:
            success = str(getattr(route, "status_code", None) or 200)
            for method in set(getattr(route, "methods", None) or ()) - {"HEAD"}:
                HTTP_LATENCY.labels(service, method, getattr(route, "path", "other"), success)

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
        """Alive: the process answers (nothing about its dependencies)."""
        return JSONResponse({"status": "alive", "service": self.name})

    async def _readyz(self, _: Request) -> Response:
        """Ready to work: the bus and every dependency answer; 503 naming each that does not."""
        reasons = [] if await self.bus.ready() else ["bus: redis not reachable or bus not started"]
        for check in self._readiness:
            reason = await check()
            if reason:
                reasons.append(reason)
        body = {"status": "ready" if not reasons else "not ready", "service": self.name, "reasons": reasons}
        return JSONResponse(body, status_code=200 if not reasons else 503)

    async def _metrics(self, _: Request) -> Response:
        """Prometheus metrics, in the text exposition format."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    def _probes(self) -> APIRouter:
        probes = APIRouter(tags=["probes"])
        probes.add_api_route(
            "/healthz",
            self._healthz,
            methods=["GET"],
            name="healthz",
            summary="Alive",
            response_model=Liveness,
        )
        not_ready: dict[int | str, dict[str, Any]] = {
            503: {"model": Readiness, "description": "not ready, with the reasons"}
        }
        probes.add_api_route(
            "/readyz",
            self._readyz,
            methods=["GET"],
            name="readyz",
            summary="Ready",
            response_model=Readiness,
            responses=not_ready,
        )
        probes.add_api_route(
            "/metrics",
            self._metrics,
            methods=["GET"],
            name="metrics",
            summary="Prometheus metrics",
            response_class=PlainTextResponse,
        )
        return probes

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
                # Bounded like the bus's own stop: one hook that hangs must not keep the bus consuming.
                try:
                    if not await finished_within(hook(), self.bus.stop_limit_s):
                        self.log.error(
                            "shutdown hook timed out", hook=_name_of(hook), after_s=self.bus.stop_limit_s
                        )
                except Exception:
                    self.log.exception("shutdown hook failed", hook=_name_of(hook))
            await self.bus.stop()
            self.tracer_provider.shutdown()
            self.log.info("service stopped")

    def asgi(
        self, router: APIRouter | None = None, deps: ServiceDeps | None = None, *, description: str = ""
    ) -> FastAPI:
        """The service's app: its routes, the probes, ``/openapi.json`` and ``/docs`` (Swagger UI, whose
        script and style come from a CDN), the mesh's refusals, and a span and latency per request.

        The routes are the app's own, not an included router's, so that each request is named (in its
        span and latency) by its route's template. Each operation's id is its endpoint's name, and what
        answers GET answers HEAD too, as Starlette routes do."""
        routes: list[BaseRoute] = []
        for route in [*(router.routes if router is not None else ()), *self._probes().routes]:
            routes.append(route)
            if isinstance(route, APIRoute):
                route.operation_id = route.operation_id or route.name
                if route.methods and "GET" in route.methods and "HEAD" not in route.methods:
                    routes.append(_head_of(route))
        app = ServiceApp(
            routes=routes,
            title=f"retrain-mesh {self.name}",
            version=_version(),
            description=description or f"The mesh's {self.name} service: probes and metrics only.",
            lifespan=self.lifespan,
            redoc_url=None,
            # The mesh traces and measures requests itself (_HttpTelemetry): FastAPI's own OpenTelemetry
            # instrumentation, on whenever a tracer provider is set, would double every span.
            telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
            exception_handlers={
                RequestValidationError: _invalid_request,
                HTTPException: _http_error,
                Refusal: _refused,
                RedisConnectionError: _redis_unavailable,
                RedisTimeoutError: _redis_unavailable,
            },
        )
        app.state.deps = deps
        app.add_middleware(_HttpTelemetry, service=self.name, routes=app.routes, tracer=self.tracer)
        return app
