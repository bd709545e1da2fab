import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from shared import events
from shared.events import (
    ContractError,
    DataIngested,
    Envelope,
    IngestRequested,
    LabelObserved,
    ModelTrained,
    RetrainRequested,
    new_event,
    parse_event,
    valid_event,
)


def _ingested() -> DataIngested:
    return DataIngested(
        dataset="demo", snapshot_id="abc", path="/d/abc.parquet", row_count=3, schema_hash="h"
    )


def test_every_stream_is_bound_to_a_payload_model_under_a_unique_name() -> None:
    assert len(events.STREAMS_BY_NAME) == len(events.ALL_STREAMS)
    for stream in events.ALL_STREAMS:
        assert issubclass(stream.payload, events.Payload)
        assert events.STREAMS_BY_NAME[str(stream)] is stream


def test_envelope_round_trips_through_json() -> None:
    event = new_event(events.DATA_INGESTED, _ingested())
    parsed = parse_event(event.model_dump_json(), events.DATA_INGESTED)
    assert parsed == event
    assert parsed.payload.snapshot_id == "abc"
    assert parsed.schema_version == 1
    assert parsed.occurred_at.tzinfo is not None


def test_an_undefined_metric_travels_as_null_and_reads_back_as_nan() -> None:
    """ROC AUC on a holdout of one class is NaN: JSON has no NaN, so the event carries null, not an
    invalid event for the registry to dead-letter."""
    trained = ModelTrained(
        dataset="d", model_name="m", run_id="r", model_uri="models:/m/1", feature_set_id="f",
        snapshot_ids=["s"], metrics={"roc_auc": math.nan, "accuracy": 0.5},
    )  # fmt: skip
    wire = new_event(events.MODEL_TRAINED, trained).model_dump_json()
    assert json.loads(wire)["payload"]["metrics"] == {"roc_auc": None, "accuracy": 0.5}
    metrics = parse_event(wire, events.MODEL_TRAINED).payload.metrics
    assert math.isnan(metrics["roc_auc"]) and metrics["accuracy"] == 0.5


def test_a_caused_event_continues_the_chain() -> None:
    cause = new_event(events.INGEST_REQUESTED, IngestRequested(dataset="demo", uri="/tmp/x.csv"))
    effect = new_event(events.DATA_INGESTED, _ingested(), cause=cause)
    assert effect.correlation_id == cause.correlation_id
    assert effect.causation_id == cause.event_id


def test_ids_derived_from_a_cause_are_deterministic() -> None:
    cause = new_event(events.INGEST_REQUESTED, IngestRequested(dataset="demo", uri="/tmp/x.csv"))
    first = new_event(events.DATA_INGESTED, _ingested(), cause=cause, dedupe_key="abc")
    again = new_event(events.DATA_INGESTED, _ingested(), cause=cause, dedupe_key="abc")
    other = new_event(events.DATA_INGESTED, _ingested(), cause=cause, dedupe_key="def")
    assert first.event_id == again.event_id != other.event_id
    assert new_event(events.DATA_INGESTED, _ingested()).event_id != first.event_id


@pytest.mark.parametrize(
    ("stream", "raw", "names"),
    [
        (events.DATA_INGESTED, b"{not json", "not valid JSON"),
        (events.DATA_INGESTED, b"[1, 2]", "JSON object"),
        (events.DATA_INGESTED, b"[" * 100_000, "nested too deeply"),
        (events.DATA_INGESTED, b'{"type": "data.ingested", "x": ' + b"[" * 100_000, "nested too deeply"),
        (events.DATA_INGESTED, b"\xff\xfe\x00", "not valid JSON"),
        (events.DATA_INGESTED, json.dumps({"type": "labels"}).encode(), "does not belong on stream"),
        (
            events.DATA_INGESTED,
            json.dumps(
                {"type": events.DATA_INGESTED, "correlation_id": "c", "payload": {"dataset": "d"}}
            ).encode(),
            "payload.snapshot_id",
        ),
        (
            events.INGEST_REQUESTED,
            json.dumps(
                {
                    "type": events.INGEST_REQUESTED,
                    "correlation_id": "c",
                    "payload": {"dataset": "demo", "uri": "/x", "surprise": 1},
                }
            ).encode(),
            "payload.surprise",
        ),
    ],
)
def test_contract_errors_name_what_is_wrong(stream: str, raw: bytes, names: str) -> None:
    with pytest.raises(ContractError, match=names.replace(".", r"\.")):
        parse_event(raw, stream)


def test_future_schema_versions_are_refused_not_misread() -> None:
    event = json.loads(new_event(events.DATA_INGESTED, _ingested()).model_dump_json())
    event["schema_version"] = 2
    with pytest.raises(ContractError, match="schema_version"):
        parse_event(json.dumps(event), events.DATA_INGESTED)


def test_payload_type_must_match_event_type() -> None:
    with pytest.raises(ValueError, match="carries DataIngested"):
        new_event(events.DATA_INGESTED, IngestRequested(dataset="demo", uri="/x"))


def test_timestamps_are_timezone_aware() -> None:
    event = new_event(events.DATA_INGESTED, _ingested())
    assert event.occurred_at <= datetime.now(UTC)


@pytest.mark.parametrize(
    "event",
    [
        new_event(events.DATA_INGESTED, _ingested()),
        new_event(
            events.MODEL_TRAINED,
            ModelTrained(
                dataset="d",
                model_name="m",
                run_id="r",
                model_uri="models:/m/1",
                feature_set_id="f",
                snapshot_ids=["s"],
                metrics={"roc_auc": math.nan, "accuracy": 0.5},
            ),
        ),
        new_event(
            events.RETRAIN_REQUESTED,
            RetrainRequested(
                dataset="d", reason="drift", evidence={"psi": 0.31, "columns": ["a"], "n": 10**30}
            ),
        ),
        new_event(events.LABELS, LabelObserved(request_id="r", label="yes", observed_at=datetime.now(UTC))),
    ],
    ids=lambda event: event.type,
)
def test_a_valid_event_reads_the_same_in_one_pass_as_decoded_then_validated(event: Envelope[Any]) -> None:
    """Consumers read valid events through pydantic's JSON parser (``valid_event``), the fast path of
    ``parse_event``: it must give what decoding with ``json`` and validating gives, NaN figures included."""
    wire = event.model_dump_json()
    stream = events.STREAMS_BY_NAME[event.type]
    one_pass = valid_event(wire, stream)
    decoded = Envelope[stream.payload].model_validate(json.loads(wire))  # type: ignore[name-defined]
    assert one_pass is not None
    assert one_pass.model_dump(mode="json") == decoded.model_dump(mode="json")
    assert one_pass.model_dump_json() == wire


def test_an_event_of_another_stream_is_no_valid_event_here() -> None:
    wire = new_event(events.DATA_INGESTED, _ingested()).model_dump_json()
    assert valid_event(wire, events.LABELS) is None
    assert valid_event(b"{not json", events.DATA_INGESTED) is None
    with pytest.raises(ContractError, match="does not belong on stream"):
        parse_event(wire, events.LABELS)
