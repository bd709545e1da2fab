"""Serving test doubles that are not the system under test: a served model's provenance without a model."""

from __future__ import annotations

from typing import Any

from services.serving.holder import LoadedModel


def loaded_model_stub(**fields: Any) -> LoadedModel:
    """A served model with placeholder provenance and no model, for the parts of serving that do not
    predict (validation reads the record model, columns and schema; the sampler only name and version)."""
    placeholders: dict[str, Any] = {
        "name": "churn-demo",
        "version": "3",
        "run_id": "run",
        "feature_set_id": "fs",
        "snapshot_ids": ["s1"],
        "loaded_at": "2026-01-01T00:00:00+00:00",
        "model": None,
        "record": None,
        "columns": [],
        "schema": None,
    }
    return LoadedModel(**{**placeholders, **fields})
