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
from shared.ml.features import FeatureSpec
from shared.ml.modeling import ModelConfig, load_logged_model, sanity_problems
from shared.ml.tasks import evaluate, higher_is_better, worsening


@dataclass
class GateDecision:
    promote: bool
    reasons: list[str]
    evidence: dict[str, Any] = field(default_factory=dict)


def judge(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    problems: list[str],
    config: ModelConfig,
) -> tuple[bool, list[str]]:
    """Pure gate rule: sanity, floors, then margin over the champion (the first model needs only floors).

    Each metric is judged in its own direction: a floor of ``rmse`` is a ceiling, and beating the
    champion on it means a lower value."""
    gate, task = config.gate, config.task
    reasons = list(problems)
    for metric, bound in gate.floors.items():
        value = candidate.get(metric, math.nan)
        if higher_is_better(task, metric):
            if not value >= bound:  # NaN fails too
                reasons.append(f"{metric} {value:.4f} is below the floor {bound}")
        elif not value <= bound:
            reasons.append(f"{metric} {value:.4f} is above the ceiling {bound}")
    if champion is not None:
        metric = config.primary_metric
        ours, theirs = candidate.get(metric, math.nan), champion.get(metric, math.nan)
        gain = -worsening(task, metric, theirs, ours)
        if not gain >= gate.margin:
            reasons.append(
                f"{metric} {ours:.4f} does not beat the champion's {theirs:.4f} by the margin {gate.margin}"
            )
    return not reasons, reasons


def evaluate_candidate(
    trained: ModelTrained, data_root: Path, config: ModelConfig, champion_version: ModelVersion | None
) -> GateDecision:
    """Score the candidate and ``champion_version`` (None for a first model) on the candidate's holdout and
    judge; the decision carries everything it was taken on as evidence."""
    manifest = require_manifest(data_root, trained.dataset, trained.feature_set_id)
    spec = FeatureSpec.model_validate(json.loads(manifest.pipeline_path.read_text())["spec"])
    holdout = pl.read_parquet(manifest.holdout_path).select([*spec.input_columns, manifest.target])

    candidate = load_logged_model(mlflow.artifacts.download_artifacts(trained.model_uri), config)
    problems, latency = sanity_problems(candidate, holdout, manifest.target, config)
    candidate_metrics = evaluate(candidate, holdout, manifest.target, config.task)

    champion_metrics = None
    if champion_version is not None:
        champion_uri = f"models:/{trained.model_name}/{champion_version.version}"
        champion = load_logged_model(mlflow.artifacts.download_artifacts(champion_uri), config)
        champion_metrics = evaluate(champion, holdout, manifest.target, config.task)

    promote, reasons = judge(candidate_metrics, champion_metrics, problems, config)
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
        "task": config.task,
        "primary_metric": config.primary_metric,
        "gate": config.gate.model_dump(),
    }
    return GateDecision(promote, reasons, evidence)
