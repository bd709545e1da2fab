"""The validation gate: whether a trained candidate may replace the champion.

A candidate is promoted only if it passes the sanity checks, meets every floor, and beats the current
champion's primary metric by the configured margin, both scored on the *candidate's* holdout (rows
neither model trained on, thanks to the id-hashed split), each through its own feature pipeline.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import polars as pl
from mlflow.entities.model_registry import ModelVersion

from shared.events import ModelTrained
from shared.ml.feature_sets import require_manifest
from shared.ml.modeling import GateConfig, evaluate, sanity_problems


@dataclass
class GateDecision:
    promote: bool
    reasons: list[str]
    evidence: dict[str, Any] = field(default_factory=dict)


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
    trained: ModelTrained, data_root: Path, gate: GateConfig, champion_version: ModelVersion | None
) -> GateDecision:
    """Score the candidate and ``champion_version`` (None for a first model) on the candidate's holdout and
    judge; the decision carries everything it was taken on as evidence."""
    manifest = require_manifest(data_root, trained.dataset, trained.feature_set_id)
    holdout = pl.read_parquet(manifest.holdout_path)
    id_column = json.loads(manifest.pipeline_path.read_text())["spec"]["id_column"]
    holdout = holdout.drop(id_column)

    candidate = mlflow.sklearn.load_model(trained.model_uri)
    problems, latency = sanity_problems(candidate, holdout, manifest.target, gate)
    candidate_metrics = evaluate(candidate, holdout, manifest.target)

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
    return GateDecision(promote, reasons, evidence)
