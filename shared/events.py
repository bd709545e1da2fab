"""Streams and their contracts: one envelope, one payload model per stream, bound together.

Nothing outside ``shared`` defines a message shape. A :class:`Stream` binds a stream name to the payload
it carries (``DATA_INGESTED: Stream[DataIngested]``), so ``bus.consume(DATA_INGESTED, handler)`` hands the
handler an ``Envelope[DataIngested]`` and ``bus.emit(DATA_INGESTED, payload)`` only takes that payload.
The event ``type`` equals the name of the stream it travels on: one stream per event type.
"""

from __future__ import annotations

import functools
import json
import math
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

SCHEMA_VERSION = 1
# Namespace for event ids derived from their cause, so a redelivered cause re-emits the same id
# and downstream de-duplication (keyed by event_id) drops the copy.
_EVENT_ID_NAMESPACE = uuid.UUID("6f1c3f0e-3b8e-4a53-9f39-7c8f2f1d9a10")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IngestRequested(Payload):
    """Ask ingest to read a batch from a file path or ``file://`` URI."""

    dataset: str = Field(min_length=1)
    uri: str = Field(min_length=1)
    content_type: str | None = Field(
        default=None, description="text/csv, application/vnd.apache.parquet or application/x-ndjson"
    )
    trigger_training: bool = Field(
        default=True, description="false: store and announce only (the monitor retrains on its own terms)"
    )


class DataIngested(Payload):
    dataset: str
    snapshot_id: str
    path: str
    row_count: int = Field(ge=0)
    schema_hash: str
    trigger_training: bool = True


class FeaturesReady(Payload):
    dataset: str
    feature_set_id: str
    path: str
    train_path: str
    holdout_path: str
    profile_path: str
    snapshot_ids: list[str]
    spec_hash: str
    target: str
    row_count: int = Field(ge=0)


class RetrainRequested(Payload):
    dataset: str
    reason: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    window_snapshots: int | None = Field(default=None, ge=1)


def _undefined_as_nan(value: object) -> object:
    return math.nan if value is None else value


# A figure that may be undefined (ROC AUC on a holdout of one class, a test on too few values): NaN in
# Python, null on the wire (JSON has no NaN, and pydantic writes it as null), NaN again when read.
Figure = Annotated[float, BeforeValidator(_undefined_as_nan, json_schema_input_type=float | None)]


class ModelTrained(Payload):
    dataset: str
    model_name: str
    run_id: str
    model_uri: str
    metrics: dict[str, Figure]
    feature_set_id: str
    snapshot_ids: list[str]
    params: dict[str, Any] = Field(default_factory=dict)


class ModelPromoted(Payload):
    model_name: str
    version: str
    run_id: str
    model_uri: str
    feature_set_id: str
    snapshot_ids: list[str]
    previous_version: str | None = None
    action: Literal["promote", "rollback"] = "promote"
    evidence: dict[str, Any] = Field(default_factory=dict)


class ModelRejected(Payload):
    model_name: str
    run_id: str
    reasons: list[str]
    evidence: dict[str, Any] = Field(default_factory=dict)


class ModelSwapFailed(Payload):
    model_name: str
    version: str = Field(description="the version the champion alias names, which could not be loaded")
    serving_version: str | None = Field(
        description="the version the worker keeps answering with; null while none is in memory"
    )
    worker: str = Field(description="the serving worker process that tried")
    error: str


class PredictionMade(Payload):
    request_id: str
    model_name: str
    model_version: str
    features: dict[str, Any]
    prediction: Any
    probability: float | None = None
    predicted_at: datetime


class LabelObserved(Payload):
    request_id: str
    label: Any
    observed_at: datetime


class DriftDetected(Payload):
    model_name: str
    model_version: str
    window: dict[str, Any]
    scores: dict[str, dict[str, Figure]]
    fired: list[str]


class DeadLetter(Payload):
    stream: str
    message_id: str
    group: str
    original: str = Field(
        description="the original message body as received (utf-8, undecodable bytes replaced)"
    )
    error: str
    attempts: int = Field(ge=1)


P = TypeVar("P", bound=Payload)


class Stream(str, Generic[P]):
    """A Redis stream's name (it *is* the ``str``) bound to the payload model its events carry."""

    payload: type[P]

    def __new__(cls, name: str, payload: type[P]) -> Stream[P]:
        stream = super().__new__(cls, name)
        stream.payload = payload
        return stream

    def __reduce__(self) -> Any:  # pickles (multiprocessing, copies) as the same binding
        return (Stream, (str(self), self.payload))


INGEST_REQUESTED: Final = Stream("ingest.requested", IngestRequested)
DATA_INGESTED: Final = Stream("data.ingested", DataIngested)
FEATURES_READY: Final = Stream("features.ready", FeaturesReady)
RETRAIN_REQUESTED: Final = Stream("retrain.requested", RetrainRequested)
MODEL_TRAINED: Final = Stream("model.trained", ModelTrained)
MODEL_PROMOTED: Final = Stream("model.promoted", ModelPromoted)
MODEL_REJECTED: Final = Stream("model.rejected", ModelRejected)
MODEL_SWAP_FAILED: Final = Stream("model.swap_failed", ModelSwapFailed)
PREDICTIONS: Final = Stream("predictions", PredictionMade)
LABELS: Final = Stream("labels", LabelObserved)
DRIFT_DETECTED: Final = Stream("drift.detected", DriftDetected)
DEADLETTER: Final = Stream("deadletter", DeadLetter)

ALL_STREAMS: Final[tuple[Stream[Any], ...]] = (
    INGEST_REQUESTED,
    DATA_INGESTED,
    FEATURES_READY,
    RETRAIN_REQUESTED,
    MODEL_TRAINED,
    MODEL_PROMOTED,
    MODEL_REJECTED,
    MODEL_SWAP_FAILED,
    PREDICTIONS,
    LABELS,
    DRIFT_DETECTED,
    DEADLETTER,
)
STREAMS_BY_NAME: Final[dict[str, Stream[Any]]] = {str(s): s for s in ALL_STREAMS}


class Envelope(BaseModel, Generic[P]):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1)
    type: str
    schema_version: int = SCHEMA_VERSION
    occurred_at: datetime = Field(default_factory=utcnow)
    correlation_id: str = Field(min_length=1)
    causation_id: str | None = None
    payload: P

    @model_validator(mode="after")
    def _type_matches_payload(self) -> Envelope[P]:
        stream = STREAMS_BY_NAME.get(self.type)
        if stream is None:
            raise ValueError(f"type: unknown event type {self.type!r}")
        if not isinstance(self.payload, stream.payload):
            raise ValueError(f"payload: a {self.type} event carries {stream.payload.__name__}")
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version: {self.schema_version} is not supported (this build reads {SCHEMA_VERSION})"
            )
        return self


class ContractError(ValueError):
    """A message that does not match its stream's contract; the reason names the fields."""


def new_event(
    stream: Stream[P],
    payload: P,
    *,
    cause: Envelope[Any] | None = None,
    dedupe_key: str | None = None,
) -> Envelope[P]:
    """Build an envelope, continuing the causal chain of ``cause`` when there is one.

    With a cause (or an explicit ``dedupe_key``) the event id is derived deterministically, so
    re-running a handler after a crash re-emits the *same* event rather than a new one.
    """
    correlation_id = cause.correlation_id if cause else uuid.uuid4().hex
    seed = None
    if cause is not None:
        seed = f"{cause.event_id}|{stream}|{dedupe_key or ''}"
    elif dedupe_key is not None:
        seed = f"{stream}|{dedupe_key}"
    event_id = uuid.uuid5(_EVENT_ID_NAMESPACE, seed).hex if seed else uuid.uuid4().hex
    return Envelope[Any](
        event_id=event_id,
        type=str(stream),
        correlation_id=correlation_id,
        causation_id=cause.event_id if cause else None,
        payload=payload,
    )


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "message"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


@functools.cache
def envelope_type(payload: type[P]) -> type[Envelope[P]]:
    """``Envelope[payload]``, made once: pydantic looks a parametrised model up again on every
    subscript (~4 us, a tenth of reading a batch entry)."""
    return Envelope[payload]  # type: ignore[valid-type]


def valid_event(raw: bytes | str, stream: Stream[P]) -> Envelope[P] | None:
    """The event ``raw`` holds if it is a valid one for ``stream``, else None (``parse_event`` says why):
    one pass of pydantic's JSON parser, a third of the time of decoding, then validating."""
    try:
        envelope = envelope_type(stream.payload).model_validate_json(raw)
    except ValueError:
        return None
    return envelope if envelope.type == stream else None


def parse_event(raw: bytes | str | dict[str, Any], stream: Stream[P]) -> Envelope[P]:
    """Decode and validate one message read from ``stream``; raise ContractError naming what is wrong."""
    if isinstance(raw, bytes | str):
        if (envelope := valid_event(raw, stream)) is not None:
            return envelope
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ContractError(f"message: not valid JSON ({exc})") from None
        except RecursionError:  # "[[[[..." thousands deep: no envelope is, and json gives up
            raise ContractError("message: JSON nested too deeply to be an event") from None
    else:
        data = raw
    if not isinstance(data, dict):
        raise ContractError("message: expected a JSON object (the event envelope)")
    if data.get("type") != stream:
        raise ContractError(f"type: {data.get('type')!r} does not belong on stream {stream!r}")
    try:
        return envelope_type(stream.payload).model_validate(data)
    except ValidationError as exc:
        raise ContractError(_describe(exc)) from None
