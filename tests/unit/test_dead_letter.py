"""The dead-letter event, without a broker: what a consumer writes when it gives up on an entry."""

from shared import events
from shared.bus import dead_letter
from shared.events import IngestRequested, new_event, parse_event


def test_a_malformed_entry_keeps_its_bytes_origin_and_reason() -> None:
    letter = dead_letter(
        events.INGEST_REQUESTED, "ingest", "17-0", b"\xffnot json", None, "invalid event: x", 1
    )
    assert letter.type == events.DEADLETTER and letter.causation_id is None
    assert letter.payload.stream == events.INGEST_REQUESTED and letter.payload.group == "ingest"
    assert letter.payload.message_id == "17-0" and letter.payload.attempts == 1
    assert letter.payload.original == "\ufffdnot json"  # undecodable bytes replaced, the rest kept
    assert letter.payload.error == "invalid event: x"
    assert parse_event(letter.model_dump_json(), events.DEADLETTER) == letter  # readable by any consumer


def test_a_failed_event_continues_its_chain() -> None:
    cause = new_event(events.INGEST_REQUESTED, IngestRequested(dataset="demo", uri="/nope.csv"))
    letter = dead_letter(events.INGEST_REQUESTED, "ingest", "18-0", cause.model_dump_json(), cause, "gone", 5)
    assert letter.correlation_id == cause.correlation_id and letter.causation_id == cause.event_id
    assert parse_event(letter.payload.original, events.INGEST_REQUESTED) == cause


def test_dead_lettering_the_same_entry_twice_publishes_one_letter() -> None:
    first = dead_letter(events.LABELS, "monitor", "19-0", b"{}", None, "boom", 3)
    again = dead_letter(events.LABELS, "monitor", "19-0", b"{}", None, "boom", 3)
    other_group = dead_letter(events.LABELS, "audit", "19-0", b"{}", None, "boom", 3)
    assert first.event_id == again.event_id != other_group.event_id
