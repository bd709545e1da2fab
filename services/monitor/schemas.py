"""The monitor's HTTP contract: what ``/drift`` and ``/drift/{model}`` answer, and the labels ``POST
/labels`` takes. Shown in its OpenAPI (``/openapi.json``, ``/docs``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

DESCRIPTION = """\
The monitor watches every model with a `deploy/config/monitor/<dataset>.yaml`: it scores each window of
served predictions against the model's training reference (drift) and, as labels arrive, its accuracy on
live rows (decay); its trigger policy announces drift (`drift.detected`) and asks for a retrain
(`retrain.requested`) on the labelled live rows.

Over HTTP: every model's state (`/drift`), one model's latest scores, decision and reasons
(`/drift/{model}`) and an HTML report for people (`/drift/{model}/report`); `POST /labels` takes the
ground truth of served predictions, keyed by the `request_id` of each answer.
Refusals are `{"error": ..., "field": ...}`, naming what to fix.
"""


class DecisionBody(BaseModel):
    """The trigger policy's decision on a window, with its reasons."""

    model_config = ConfigDict(extra="allow")

    retrain: bool = Field(description="a retrain was asked for")
    episode_started: bool = Field(description="this window began a drift episode (announced once)")
    episode_active: bool
    fired: list[str] = Field(description="the tests that fired, as `<test>:<feature>`")
    reasons: list[str]


class WindowSummary(BaseModel):
    """One evaluated window (as stored, without the distributions the report plots)."""

    model_config = ConfigDict(extra="allow")

    model_name: str
    model_version: str
    rows: int
    labelled_rows: int
    started_at: str
    ended_at: str
    scores: dict[str, dict[str, float | None]] = Field(
        description="per input feature (and the output): each statistic's score; null when there was "
        "nothing to compare"
    )
    performance_drop: float | None = Field(description="how much worse than at training; null without labels")
    performance_metric: str
    performance: float | None = Field(description="the metric on the window's labelled rows, when enough")
    decision: DecisionBody


class ModelDrift(BaseModel):
    """A watched model's state."""

    model_name: str
    windows: int = Field(description="windows evaluated so far")
    latest: WindowSummary | None = Field(description="the latest window; null before the first")
    labelled_rows_waiting: int = Field(description="labelled live rows kept for the next retrain")
    open_windows: dict[str, int] = Field(description="per model version: rows in its open window")


class ModelDriftDetail(ModelDrift):
    references: list[str] = Field(description="the versions whose training reference this process holds")


class DriftOverview(BaseModel):
    models: dict[str, ModelDrift] = Field(description="every watched model, by name")


def _scalar(value: Any) -> Any:
    if value is not None and not isinstance(value, str | int | float | bool):
        raise PydanticCustomError(
            "scalar_type", "a JSON scalar (string, number, boolean or null) is required"
        )
    return value


# A label as the dataset's target holds it (a class as text, number or boolean; a value), never a structure.
Scalar = Annotated[
    Any,
    BeforeValidator(_scalar),
    WithJsonSchema({"type": ["string", "number", "integer", "boolean", "null"]}),
]


def _timestamp_text(value: Any) -> Any:
    # pydantic would also take a number as seconds (or milliseconds, by its size) since the epoch: a guess
    # the contract does not make. A date-time is ISO 8601 text, as the OpenAPI says.
    if value is not None and not isinstance(value, str):
        raise PydanticCustomError("datetime_type", "an ISO 8601 date-time string is required")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_timestamp_text)]


class Label(BaseModel):
    """The ground truth of one served prediction."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(description="the `request_id` serving answered the prediction with")
    label: Scalar = Field(description="the true label (or value) of the dataset's target")
    observed_at: Timestamp | None = Field(default=None, description="when it was observed; default: now")


class LabelsRequest(BaseModel):
    """``{"labels": [{"request_id": ..., "label": ...}, ...]}``."""

    labels: list[Label] = Field(min_length=1)


class LabelsAccepted(BaseModel):
    accepted: int = Field(description="labels published on the `labels` stream")
