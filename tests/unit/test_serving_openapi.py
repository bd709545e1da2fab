"""Serving's OpenAPI says what an answer holds for each task kind, and what serving answers fits it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from services.serving.answers import Answer
from shared.ml.tasks import Outputs


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    from services.serving.app import MeshServing

    openapi: dict[str, Any] = MeshServing.openapi_spec.asdict()
    return openapi


def _answer_schema(spec: dict[str, Any], route: str) -> dict[str, Any]:
    schema: dict[str, Any] = spec["paths"][route]["post"]["responses"][200]["content"]["application/json"][
        "schema"
    ]
    return schema


def test_the_answer_schema_names_each_task_kinds_fields(spec: dict[str, Any]) -> None:
    answer = _answer_schema(spec, "/predict")["properties"]
    # A label (any JSON scalar: the dataset's label type) or a value, not one type for every model.
    assert {t["type"] for t in answer["prediction"]["oneOf"]} == {"string", "integer", "number", "boolean"}
    assert "regression models: the predicted value" in answer["prediction"]["description"]
    assert answer["probability"]["description"].startswith("binary models only")
    assert answer["probabilities"]["additionalProperties"] == {"type": "number"}
    assert set(_answer_schema(spec, "/predict")["required"]) == {"request_id", "prediction", "model"}
    batch = _answer_schema(spec, "/predict_batch")
    assert batch["properties"]["predictions"]["items"] == {"$ref": "#/components/schemas/Answer"}


@pytest.mark.parametrize(
    "outputs",
    [
        Outputs("binary", np.array(["no"]), np.array([[0.8, 0.2]]), ["no", "yes"]),
        Outputs("binary", np.array([True]), np.array([[0.3, 0.7]]), [False, True]),
        Outputs("multiclass", np.array([2]), np.array([[0.1, 0.2, 0.7]]), [0, 1, 2]),
        Outputs("regression", np.array([151.25])),
    ],
)
def test_what_serving_answers_fits_the_schema(outputs: Outputs) -> None:
    answered = {"request_id": "r1", **outputs.answer(0)}
    assert Answer.model_validate(answered).model_dump(exclude_none=True) == answered
