"""Which version of a model serves: the ``champion`` and ``previous`` aliases, reading and moving them.

Promotion registers a version, moves alias ``champion`` to it and ``previous`` to the old champion; a
rollback moves ``champion`` back to ``previous``. Every mover holds the model's lock (:func:`aliases_lock`).
"""

from __future__ import annotations

import json
from typing import Any, Literal

import mlflow
import redis.asyncio as aioredis
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from redis.asyncio.lock import Lock

from services.registry.gate import GateDecision
from shared.events import ModelPromoted, ModelTrained
from shared.ml.modeling import CHAMPION, PREVIOUS


def aliases_lock(redis: aioredis.Redis, model_name: str, *, timeout: float, blocking_timeout: float) -> Lock:
    """One mover of a model's aliases at a time, across replicas: two movers racing would both read the
    same champion and could both move the alias, losing one move's ``previous``."""
    return redis.lock(f"mesh:lock:registry:{model_name}", timeout=timeout, blocking_timeout=blocking_timeout)


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def described_aliases(client: MlflowClient, name: str) -> dict[str, Any]:
    """The version, run and tags each alias points at (None where it is not set)."""
    found = {}
    for alias in (CHAMPION, PREVIOUS):
        version = alias_version(client, name, alias)
        found[alias] = (
            {"version": version.version, "run_id": version.run_id, "tags": version.tags} if version else None
        )
    return found


def register_and_promote(
    client: MlflowClient, trained: ModelTrained, decision: GateDecision, previous: ModelVersion | None
) -> ModelPromoted:
    """Register the candidate (once per run) and move the aliases; safe to repeat after a crash."""
    existing = client.search_model_versions(f"name='{trained.model_name}' and run_id='{trained.run_id}'")
    if existing:
        version = existing[0]
        previous_version = version.tags.get("mesh.previous_version") or None
    else:
        previous_version = previous.version if previous is not None else None
        tags = {
            "mesh.feature_set_id": trained.feature_set_id,
            "mesh.snapshot_ids": json.dumps(trained.snapshot_ids),
            "mesh.dataset": trained.dataset,
            # The holdout metrics it was promoted on (the monitor measures decay against them); the
            # full evidence is the run's gate/evidence.json artifact.
            "mesh.metrics": json.dumps(decision.evidence["candidate"]["metrics"]),
            "mesh.previous_version": previous_version or "",
        }
        version = mlflow.register_model(trained.model_uri, trained.model_name, tags=tags)
    if previous_version:
        client.set_registered_model_alias(trained.model_name, PREVIOUS, previous_version)
    client.set_registered_model_alias(trained.model_name, CHAMPION, str(version.version))
    return ModelPromoted(
        model_name=trained.model_name,
        version=str(version.version),
        run_id=trained.run_id,
        model_uri=f"models:/{trained.model_name}/{version.version}",
        feature_set_id=trained.feature_set_id,
        snapshot_ids=trained.snapshot_ids,
        previous_version=previous_version,
        evidence=decision.evidence,
    )


def move_champion(
    client: MlflowClient, name: str, target: str | Literal["previous"], reason: str
) -> ModelPromoted:
    """Manual promote (a version number) or one-step rollback (``"previous"``)."""
    current = alias_version(client, name, CHAMPION)
    if target == PREVIOUS:
        chosen = alias_version(client, name, PREVIOUS)
        if chosen is None:
            raise LookupError(f"model {name!r} has no previous version to roll back to")
    else:
        try:
            chosen = client.get_model_version(name, target)
        except MlflowException:
            raise LookupError(f"model {name!r} has no version {target!r}") from None
    if current is not None and current.version != chosen.version:
        client.set_registered_model_alias(name, PREVIOUS, str(current.version))
    client.set_registered_model_alias(name, CHAMPION, str(chosen.version))
    tags = chosen.tags or {}
    return ModelPromoted(
        model_name=name,
        version=str(chosen.version),
        run_id=chosen.run_id or "",
        model_uri=f"models:/{name}/{chosen.version}",
        feature_set_id=tags.get("mesh.feature_set_id", ""),
        snapshot_ids=json.loads(tags.get("mesh.snapshot_ids", "[]")),
        previous_version=str(current.version) if current is not None else None,
        action="rollback" if target == PREVIOUS else "promote",
        evidence={"reason": reason},
    )
