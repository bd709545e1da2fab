"""Trace sampling and exporters, without a collector: what is kept and where it goes."""

import json
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from shared.runtime.settings import MeshSettings
from shared.runtime.telemetry import JsonLinesSpanExporter, setup_tracing


def _settings(tmp_path: Path, ratio: float) -> MeshSettings:
    return MeshSettings(
        state_dir=tmp_path,
        otel_exporter="file",
        trace_file=tmp_path / "t.jsonl",
        trace_request_sample_ratio=ratio,
    )


def test_requests_that_start_a_trace_are_sampled_but_event_chains_never_are(tmp_path: Path) -> None:
    tracer = setup_tracing("serving", _settings(tmp_path, 0.0)).get_tracer("t")
    with tracer.start_as_current_span("POST /predict", kind=SpanKind.SERVER) as request:
        assert not request.is_recording()  # thinned out at ratio 0
    with tracer.start_as_current_span("serving.swap") as internal:
        assert internal.is_recording()  # internal work is always kept
    remote = SpanContext(
        trace_id=0xABC, span_id=0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    parent = trace.set_span_in_context(NonRecordingSpan(remote))
    with tracer.start_as_current_span(
        "model.promoted process", context=parent, kind=SpanKind.CONSUMER
    ) as chained:
        assert chained.is_recording() and chained.get_span_context().trace_id == 0xABC  # continues the chain
    with tracer.start_as_current_span("POST /predict", context=parent, kind=SpanKind.SERVER) as joined:
        assert joined.is_recording()  # a request inside a sampled trace follows its parent


def test_full_ratio_keeps_every_request_and_the_file_exporter_writes_json_lines(tmp_path: Path) -> None:
    settings = _settings(tmp_path, 1.0)
    provider = setup_tracing("ingest", settings)
    with provider.get_tracer("t").start_as_current_span(
        "POST /datasets/{name}/batches", kind=SpanKind.SERVER
    ):
        pass
    provider.shutdown()  # flushes the batch processor
    [line] = (tmp_path / "t.jsonl").read_text().splitlines()
    span = json.loads(line)
    assert span["name"] == "POST /datasets/{name}/batches"
    assert span["resource"]["attributes"]["service.name"] == "mesh-ingest"


def test_exporters_are_a_list_and_unknown_ones_are_refused() -> None:
    assert MeshSettings(otel_exporter="mlflow, file").otel_exporters == ["mlflow", "file"]
    assert MeshSettings(otel_exporter="none").otel_exporters == []
    try:
        _ = MeshSettings(otel_exporter="zipkin").otel_exporters
    except ValueError as exc:
        assert "zipkin" in str(exc)
    else:
        raise AssertionError("an unknown exporter must be refused")


def test_the_file_exporter_writes_what_to_json_says_of_each_span(tmp_path: Path) -> None:
    finished: list[ReadableSpan] = []

    class Kept(SimpleSpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            finished.append(span)
            super().on_end(span)

    provider = TracerProvider(resource=Resource.create({"service.name": "mesh-test"}))
    provider.add_span_processor(Kept(JsonLinesSpanExporter(tmp_path / "t.jsonl")))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("parent", attributes={"n": 1, "names": ["a", "b"]}) as parent:
        parent.add_event("happened", {"why": "test"})
        linked = trace.Link(parent.get_span_context(), {"rel": "follows"})
        with tracer.start_as_current_span("child", links=[linked]) as child:
            child.set_status(trace.Status(trace.StatusCode.ERROR, "it broke"))
    written = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert written == [json.loads(span.to_json()) for span in finished]
