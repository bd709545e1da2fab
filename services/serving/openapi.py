"""Serving's OpenAPI documents, typed for the models it serves.

BentoML writes ``/docs.json`` from the API methods' annotations, written before any model is known: there a
record is any object. ``GET /openapi.json`` is that document with each declared model's record (its raw
inputs: fields, types, ranges, categories, as the request is validated) in ``components.schemas`` and the
bodies of ``/predict`` and ``/predict_batch`` typed as one of the declared models with its record;
``GET /models/{name}/openapi.json`` is the same for one model alone, for a client generator to take as is.
Built per request: models are declared and promoted while the server runs.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from services.serving.records import record_model
from shared.ml.datasets import load_schema
from shared.ml.features import load_feature_spec
from shared.ml.modeling import ModelConfig

# The components BentoML names after the API methods (``<method>__Input``), and the field of each that
# carries records: one record, or a list of them.
INPUTS = {"predict__Input": ("features", False), "predict_batch__Input": ("records", True)}


def declared_record(config: ModelConfig, config_dir: Path) -> type[BaseModel]:
    """The record a request for ``config``'s model carries, from its declared schema and features."""
    columns = load_feature_spec(config_dir, config.dataset).input_columns
    return record_model(load_schema(config_dir, config.dataset), columns)


def typed_spec(base: dict[str, Any], records: dict[str, type[BaseModel]]) -> dict[str, Any]:
    """``base`` (BentoML's document) with its inputs typed by the record model of each named model."""
    spec = copy.deepcopy(base)
    schemas: dict[str, Any] = spec.setdefault("components", {}).setdefault("schemas", {})
    refs: dict[str, dict[str, str]] = {}
    for name, record in sorted(records.items()):
        key = f"{_component(name)}Record"
        schema = record.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[key] = {**schema, "title": f"A record for {name}"}
        refs[name] = {"$ref": f"#/components/schemas/{key}"}
    if not refs:
        return spec
    only = len(refs) == 1
    for component, (field, many) in INPUTS.items():
        if component not in schemas:
            continue
        described = schemas[component]["properties"][field].get("description")
        variants = []
        for name, ref in refs.items():
            carried = {"type": "array", "items": ref, "minItems": 1} if many else ref
            variants.append(
                {
                    "type": "object",
                    "title": name,
                    # The one model may be left out while it is the only one served.
                    "required": [field] if only else ["model", field],
                    "properties": {
                        "model": {"type": "string", "enum": [name], "description": "the model to ask"},
                        field: {**carried, **({"description": described} if described else {})},
                    },
                }
            )
        schemas[component] = variants[0] if only else {"oneOf": variants, "title": component}
    return spec


def _component(name: str) -> str:
    """A model name as a component name: ``churn-demo`` -> ``ChurnDemo``."""
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name) if part)
