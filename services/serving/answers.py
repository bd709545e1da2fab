"""What serving answers, as the OpenAPI schema shows it: one shape for every task kind, each field saying
which kind gives it (shared/ml/tasks.py ``Outputs.answer`` builds the values)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Provenance(BaseModel):
    """The model version behind an answer, enough to follow it to its MLflow run and training data."""

    name: str
    version: str
    run_id: str
    feature_set_id: str
    data_digest: str = Field(description="digest of the snapshots the version was trained on")


class Answer(BaseModel):
    """One record's answer."""

    request_id: str = Field(description="the key to send this record's ground truth with (POST /labels)")
    # oneOf by hand: BentoML flattens a Union's anyOf to its first type in the OpenAPI schema.
    prediction: Any = Field(
        description="binary and multiclass models: the predicted label, typed as the dataset's labels; "
        "regression models: the predicted value",
        json_schema_extra={"oneOf": [{"type": t} for t in ("string", "integer", "number", "boolean")]},
    )
    probability: float | None = Field(
        default=None, description="binary models only: the probability of the positive class"
    )
    probabilities: dict[str, float] | None = Field(
        default=None, description="binary and multiclass models: each class's probability, by label"
    )


class Prediction(Answer):
    """POST /predict: one record's answer and the model version that gave it."""

    model: Provenance


class Predictions(BaseModel):
    """POST /predict_batch: each record's answer, in order, and the model version that gave them all."""

    predictions: list[Answer]
    model: Provenance
