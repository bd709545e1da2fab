"""Event contracts: one envelope, one payload model per event type.

Nothing outside ``shared`` defines a message shape. The event ``type`` equals the stream it
travels on (one stream per type, see ``shared.streams``).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared import streams

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


class ModelTrained(Payload):
    dataset: str
    model_name: str
    run_id: str
    model_uri: str
    metrics: dict[str, float]
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
    scores: dict[str, dict[str, float]]
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


PAYLOAD_TYPES: dict[str, type[Payload]] = {
    streams.INGEST_REQUESTED: IngestRequested,
    streams.DATA_INGESTED: DataIngested,
    streams.FEATURES_READY: FeaturesReady,
    streams.RETRAIN_REQUESTED: RetrainRequested,
    streams.MODEL_TRAINED: ModelTrained,
    streams.MODEL_PROMOTED: ModelPromoted,
    streams.MODEL_REJECTED: ModelRejected,
    streams.PREDICTIONS: PredictionMade,
    streams.LABELS: LabelObserved,
    streams.DRIFT_DETECTED: DriftDetected,
    streams.DEADLETTER: DeadLetter,
}
assert set(PAYLOAD_TYPES) == set(streams.ALL_STREAMS), "every stream needs a payload model"

P = TypeVar("P", bound=Payload)


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
        expected = PAYLOAD_TYPES.get(self.type)
        if expected is None:
            raise ValueError(f"type: unknown event type {self.type!r}")
        if not isinstance(self.payload, expected):
            raise ValueError(f"payload: a {self.type} event carries {expected.__name__}")
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version: {self.schema_version} is not supported (this build reads {SCHEMA_VERSION})"
            )
        return self


class ContractError(ValueError):
    """A message that does not match its stream's contract; the reason names the fields."""


def new_event(
    event_type: str,
    payload: Payload,
    *,
    cause: Envelope[Any] | None = None,
    dedupe_key: str | None = None,
) -> Envelope[Any]:
    """Build an envelope, continuing the causal chain of ``cause`` when there is one.

    With a cause (or an explicit ``dedupe_key``) the event id is derived deterministically, so
    re-running a handler after a crash re-emits the *same* event rather than a new one.
    """
    correlation_id = cause.correlation_id if cause else uuid.uuid4().hex
    seed = None
    if cause is not None:
        seed = f"{cause.event_id}|{event_type}|{dedupe_key or ''}"
    elif dedupe_key is not None:
        seed = f"{event_type}|{dedupe_key}"
    event_id = uuid.uuid5(_EVENT_ID_NAMESPACE, seed).hex if seed else uuid.uuid4().hex
    return Envelope[Any](
        event_id=event_id,
        type=event_type,
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


def parse_event(raw: bytes | str | dict[str, Any], stream: str) -> Envelope[Any]:
    """Decode and validate one message read from ``stream``; raise ContractError naming what is wrong."""
    payload_type = PAYLOAD_TYPES.get(stream)
    if payload_type is None:
        raise ContractError(f"stream {stream!r} has no contract")
    if isinstance(raw, bytes | str):
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ContractError(f"message: not valid JSON ({exc})") from None
    else:
        data = raw
    if not isinstance(data, dict):
        raise ContractError("message: expected a JSON object (the event envelope)")
    if data.get("type") != stream:
        raise ContractError(f"type: {data.get('type')!r} does not belong on stream {stream!r}")
    try:
        return Envelope[payload_type].model_validate(data)  # type: ignore[valid-type]
    except ValidationError as exc:
        raise ContractError(_describe(exc)) from None
