"""What a model version is compared with, and how it is read from the MLflow registry."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from shared.ml.modeling import OUTPUT_PROFILE


@dataclass(frozen=True)
class Reference:
    """What a model version is compared with: its training profile, the profile of its outputs on its
    holdout, and its metrics at promotion."""

    version: str
    profile: dict[str, Any]
    promoted_metrics: dict[str, float]
    feature_set_id: str
    output_profile: dict[str, Any] | None = None  # None: a version logged before outputs were profiled


def reference_from_version(
    tags: dict[str, str], profile: dict[str, Any], version: str, output_profile: dict[str, Any] | None = None
) -> Reference:
    metrics = json.loads(tags.get("mesh.metrics") or "{}")
    return Reference(
        version=version,
        profile=profile,
        promoted_metrics={k: float(v) for k, v in metrics.items() if v is not None},
        feature_set_id=tags.get("mesh.feature_set_id", ""),
        output_profile=output_profile,
    )


def fetch_reference(client: MlflowClient, model_name: str, version: str) -> Reference:
    """The registered version's tags and the profiles its training run logged (blocking I/O)."""
    details = client.get_model_version(model_name, version)
    profile = mlflow.artifacts.load_dict(f"runs:/{details.run_id}/features/profile.json")
    outputs = None
    listed = client.list_artifacts(str(details.run_id), OUTPUT_PROFILE.rpartition("/")[0])
    if any(item.path == OUTPUT_PROFILE for item in listed):
        outputs = mlflow.artifacts.load_dict(f"runs:/{details.run_id}/{OUTPUT_PROFILE}")
    return reference_from_version(details.tags or {}, profile, version, outputs)


class References:
    """Each (model, version)'s reference, read from MLflow once per process: a version never changes."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client
        self._known: dict[tuple[str, str], Reference] = {}

    def known(self, model_name: str) -> list[str]:
        return sorted(version for name, version in self._known if name == model_name)

    def set(self, model_name: str, reference: Reference) -> None:
        self._known[(model_name, reference.version)] = reference

    async def get(self, model_name: str, version: str) -> Reference:
        """Raises while MLflow cannot answer: the caller's event is then retried."""
        key = (model_name, version)
        if key not in self._known:
            self._known[key] = await asyncio.to_thread(fetch_reference, self.client, model_name, version)
        return self._known[key]
