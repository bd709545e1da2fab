"""OpenTelemetry tracer setup shared by every service.

Exporters (``MESH_OTEL_EXPORTER``): ``otlp`` (HTTP, to ``MESH_OTLP_ENDPOINT``), ``file`` (JSON lines
at ``MESH_TRACE_FILE`` for offline reading), ``console``, or ``none``. Trace context crosses the
bus in message headers via FastStream's Redis telemetry middleware (see ``shared.bus``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util import ns_to_iso_str
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    TraceState,
    format_span_id,
    format_trace_id,
    get_current_span,
)
from opentelemetry.util.types import Attributes

from shared.runtime.settings import MeshSettings


def _context(context: SpanContext) -> dict[str, str]:
    return {
        "trace_id": f"0x{format_trace_id(context.trace_id)}",
        "span_id": f"0x{format_span_id(context.span_id)}",
        "trace_state": repr(context.trace_state),
    }


class JsonLinesSpanExporter(SpanExporter):
    """Appends one JSON object per finished span to a file (several processes may share it), in the
    shape of ``ReadableSpan.to_json``. Built here: ``to_json`` indents, and serialises the process's
    resource again for every span; under a flood of events the file exporter took a fifth of a service's
    CPU that way (py-spy)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._resources: dict[int, dict[str, Any]] = {}  # one resource per provider: read once

    def _record(self, span: ReadableSpan) -> dict[str, Any]:
        status: dict[str, str] = {"status_code": span.status.status_code.name}
        if span.status.description:
            status["description"] = span.status.description
        resource = self._resources.get(id(span.resource))
        if resource is None:
            resource = json.loads(span.resource.to_json())
            self._resources[id(span.resource)] = resource
        return {
            "name": span.name,
            "context": _context(span.context) if span.context else None,
            "kind": str(span.kind),
            "parent_id": f"0x{format_span_id(span.parent.span_id)}" if span.parent else None,
            "start_time": ns_to_iso_str(span.start_time) if span.start_time else None,
            "end_time": ns_to_iso_str(span.end_time) if span.end_time else None,
            "status": status,
            "attributes": dict(span.attributes or {}),
            "events": [
                {
                    "name": event.name,
                    "timestamp": ns_to_iso_str(event.timestamp),
                    "attributes": dict(event.attributes or {}),
                }
                for event in span.events
            ],
            "links": [
                {"context": _context(link.context), "attributes": dict(link.attributes or {})}
                for link in span.links
            ],
            "resource": resource,
        }

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(
            json.dumps(self._record(span), separators=(",", ":"), default=list) + "\n" for span in spans
        )
        with self._lock:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            # One write per batch in append mode keeps lines from different processes whole.
            with self._path.open("a", encoding="utf-8") as fh:
                fh.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


class MlflowTraceExporter(SpanExporter):
    """Spans to the MLflow server's OTLP endpoint, filed under one experiment, so the MLflow UI (already
    part of the stack) shows the mesh's traces. The experiment is found or created on the first export,
    in the exporter's thread: nothing connects at import or start-up."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        self._uri, self._experiment = tracking_uri.rstrip("/"), experiment
        self._inner: SpanExporter | None = None

    def _target(self) -> SpanExporter:
        if self._inner is None:
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            client = MlflowClient(self._uri)
            found = client.get_experiment_by_name(self._experiment)
            if found is None:
                try:
                    experiment_id = client.create_experiment(self._experiment)
                except MlflowException:  # another service created it first
                    experiment_id = client.get_experiment_by_name(self._experiment).experiment_id  # type: ignore[union-attr]
            else:
                experiment_id = found.experiment_id
            self._inner = OTLPSpanExporter(
                endpoint=f"{self._uri}/v1/traces", headers={"x-mlflow-experiment-id": experiment_id}
            )
        return self._inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            return self._target().export(spans)
        except Exception:  # MLflow not up yet: these spans are lost, later ones will go through
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        if self._inner is not None:
            self._inner.shutdown()


def _exporters(settings: MeshSettings) -> list[SpanExporter]:
    exporters: list[SpanExporter] = []
    for kind in settings.otel_exporters:
        if kind == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            if not settings.otlp_endpoint:
                raise ValueError("MESH_OTLP_ENDPOINT is required when MESH_OTEL_EXPORTER includes otlp")
            endpoint = settings.otlp_endpoint.rstrip("/")
            if not endpoint.endswith("/v1/traces"):
                endpoint += "/v1/traces"
            exporters.append(OTLPSpanExporter(endpoint=endpoint))
        elif kind == "mlflow":
            exporters.append(MlflowTraceExporter(settings.effective_mlflow_uri, settings.trace_experiment))
        elif kind == "file":
            exporters.append(
                JsonLinesSpanExporter(settings.trace_file or settings.state_dir / "traces.jsonl")
            )
        elif kind == "console":
            exporters.append(ConsoleSpanExporter())
    return exporters


class RequestSampler(Sampler):
    """Samples requests that start a trace (root server spans) at ``ratio``; keeps everything else.

    Spans that continue a trace (an event chain, a swap) follow their parent's decision, and internal roots
    are always kept, so only high-volume request traffic (predictions) is thinned.
    """

    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)
        self._inner = ParentBased(ALWAYS_ON)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        root = not get_current_span(parent_context).get_span_context().is_valid
        sampler = self._ratio if root and kind == SpanKind.SERVER else self._inner
        return sampler.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"RequestSampler({self._ratio.get_description()})"


def setup_tracing(service: str, settings: MeshSettings) -> TracerProvider:
    """A tracer provider for this process; spans are recorded (for log correlation) even with no exporter."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"mesh-{service}"}),
        sampler=RequestSampler(settings.trace_request_sample_ratio),
    )
    for exporter in _exporters(settings):
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    return provider
