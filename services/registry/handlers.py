"""Registry logic: the validation gate and the aliases that say which model serves.

A candidate is promoted only if it passes the sanity checks, meets every floor, and beats the current
champion's primary metric by the configured margin, both scored on the *candidate's* holdout (rows
neither model trained on, thanks to the id-hashed split), each through its own feature pipeline.
Promotion registers a version, moves alias ``champion`` to it and ``previous`` to the old champion.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import mlflow
import polars as pl
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from shared.events import ModelPromoted, ModelRejected, ModelTrained
from shared.ml.feature_sets import require_manifest
from shared.ml.modeling import CHAMPION, PREVIOUS, GateConfig, evaluate, sanity_problems

TAG_GATE = "mesh.gate"  # on the candidate's run: the decision and its evidence, for idempotency


@dataclass
class GateDecision:
    promote: bool
    reasons: list[str]
    evidence: dict[str, Any] = field(default_factory=dict)


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def judge(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    problems: list[str],
    gate: GateConfig,
) -> tuple[bool, list[str]]:
    """Pure gate rule: sanity, floors, then margin over the champion (the first model needs only floors)."""
    reasons = list(problems)
    for metric, floor in gate.floors.items():
        value = candidate.get(metric, math.nan)
        if not value >= floor:  # NaN fails too
            reasons.append(f"{metric} {value:.4f} is below the floor {floor}")
    if champion is not None:
        ours, theirs = (
            candidate.get(gate.primary_metric, math.nan),
            champion.get(gate.primary_metric, math.nan),
        )
        if not ours >= theirs + gate.margin:
            reasons.append(
                f"{gate.primary_metric} {ours:.4f} does not beat the champion's {theirs:.4f} "
                f"by the margin {gate.margin}"
            )
    return not reasons, reasons


def evaluate_candidate(
    trained: ModelTrained, data_root: Path, gate: GateConfig, client: MlflowClient
) -> tuple[GateDecision, ModelVersion | None]:
    manifest = require_manifest(data_root, trained.dataset, trained.feature_set_id)
    holdout = pl.read_parquet(manifest.holdout_path)
    id_column = json.loads(manifest.pipeline_path.read_text())["spec"]["id_column"]
    holdout = holdout.drop(id_column)

    candidate = mlflow.sklearn.load_model(trained.model_uri)
    problems, latency = sanity_problems(candidate, holdout, manifest.target, gate)
    candidate_metrics = evaluate(candidate, holdout, manifest.target)

    champion_version = alias_version(client, trained.model_name, CHAMPION)
    champion_metrics = None
    if champion_version is not None:
        champion = mlflow.sklearn.load_model(f"models:/{trained.model_name}/{champion_version.version}")
        champion_metrics = evaluate(champion, holdout, manifest.target)

    promote, reasons = judge(candidate_metrics, champion_metrics, problems, gate)
    evidence = {
        "holdout_feature_set_id": manifest.feature_set_id,
        "holdout_rows": holdout.height,
        "candidate": {
            "run_id": trained.run_id,
            "metrics": candidate_metrics,
            "latency_ms": round(latency, 3),
        },
        "champion": (
            {
                "version": champion_version.version,
                "run_id": champion_version.run_id,
                "metrics": champion_metrics,
            }
            if champion_version is not None
            else None
        ),
        "gate": gate.model_dump(),
    }
    return GateDecision(promote, reasons, evidence), champion_version


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


def record_decision(client: MlflowClient, run_id: str, decision: GateDecision) -> None:
    """Keep the decision on the candidate's run: evidence as an artifact, the verdict as a tag (last)."""
    client.log_dict(run_id, decision.evidence, "gate/evidence.json")
    client.set_tag(run_id, TAG_GATE, json.dumps({"promote": decision.promote, "reasons": decision.reasons}))


def recorded_decision(client: MlflowClient, run_id: str) -> GateDecision | None:
    """The decision a previous delivery of the same ``model.trained`` already took, if any."""
    verdict = client.get_run(run_id).data.tags.get(TAG_GATE)
    if verdict is None:
        return None
    data = json.loads(verdict)
    evidence = mlflow.artifacts.load_dict(f"runs:/{run_id}/gate/evidence.json")
    return GateDecision(bool(data["promote"]), list(data["reasons"]), evidence)


def rejected(trained: ModelTrained, decision: GateDecision) -> ModelRejected:
    return ModelRejected(
        model_name=trained.model_name,
        run_id=trained.run_id,
        reasons=decision.reasons,
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
