"""A model trained exactly as the training service trains it, without MLflow: for model behaviour tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import polars as pl
from sklearn.pipeline import Pipeline

from shared.ml.feature_sets import FeatureSetManifest
from shared.ml.modeling import ModelConfig, fit_servable
from shared.ml.tasks import evaluate, predict_outputs


@dataclass(frozen=True)
class Trained:
    manifest: FeatureSetManifest
    pipeline: dict[str, Any]
    model: Pipeline
    holdout: pl.DataFrame  # raw inputs + target, id dropped (as the registry scores it)
    metrics: dict[str, float]


def train_offline(manifest: FeatureSetManifest, config: ModelConfig) -> Trained:
    """What services/training/trainer.py train() does, without MLflow."""
    train_frame = pl.read_parquet(manifest.train_path)
    holdout = pl.read_parquet(manifest.holdout_path)
    pipeline = json.loads(manifest.pipeline_path.read_text())
    target = manifest.target
    model = fit_servable(config, train_frame, target, pipeline)
    if pipeline["spec"].get("id_column"):
        holdout = holdout.drop(pipeline["spec"]["id_column"])
    return Trained(manifest, pipeline, model, holdout, evaluate(model, holdout, target, config.task))


def positive_scores(model: Any, records: Any) -> Any:
    """A binary model's probability of the positive class for each record."""
    return predict_outputs(model, records, "binary").positive_scores
