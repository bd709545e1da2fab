"""Training: fit the configured estimator on a feature set; log a traceable MLflow run, once per trigger."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import mlflow
import polars as pl
from mlflow.data.polars_dataset import from_polars
from mlflow.tracking import MlflowClient
from opentelemetry import trace

from shared.events import ModelTrained
from shared.ml.estimators import SKOPS_FILES, require_reviewed, trusted_types
from shared.ml.feature_sets import FeatureSetManifest
from shared.ml.features import FeaturePipeline
from shared.ml.modeling import (
    OUTPUT_PROFILE,
    ModelConfig,
    fit_servable,
    limit_native_threads,
    model_requirements,
    model_signature,
)
from shared.ml.tasks import output_profile, predict_outputs, score

TAG_TRIGGER = "mesh.trigger_event_id"


@dataclass(frozen=True)
class TrainedRun:
    run_id: str
    model_uri: str
    metrics: dict[str, float]
    params: dict[str, Any]


def announcement(config: ModelConfig, manifest: FeatureSetManifest, run: TrainedRun) -> ModelTrained:
    """What ``model.trained`` says of ``run``: the candidate, its metrics and the data behind it."""
    return ModelTrained(
        dataset=manifest.dataset,
        model_name=config.model_name,
        run_id=run.run_id,
        model_uri=run.model_uri,
        metrics=run.metrics,
        feature_set_id=manifest.feature_set_id,
        snapshot_ids=manifest.snapshot_ids,
        params=run.params,
    )


def experiment_name(dataset: str) -> str:
    return f"mesh-{dataset}"


def find_run_for_trigger(client: MlflowClient, dataset: str, trigger_event_id: str) -> TrainedRun | None:
    """The run a previous delivery of the same trigger already finished, if any (idempotency).

    Runs of the trigger an earlier delivery left unfinished (its process killed, or MLflow gone longer
    than its client retries, mid-run) are marked FAILED: the entry is held by one consumer at a time, so
    no such run is still being written, and the registry and the UI should not show it as running."""
    experiment = client.get_experiment_by_name(experiment_name(dataset))
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{TAG_TRIGGER}` = '{trigger_event_id}'"
    )
    for run in runs:
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status="FAILED")
    done = [run for run in runs if run.info.status == "FINISHED" and "mesh.model_uri" in run.data.tags]
    if not done:
        return None
    run = done[0]
    return TrainedRun(
        run_id=run.info.run_id,
        model_uri=run.data.tags["mesh.model_uri"],
        metrics=dict(run.data.metrics),
        params=dict(run.data.params),
    )


def train(
    client: MlflowClient,
    manifest: FeatureSetManifest,
    config: ModelConfig,
    *,
    trigger_type: str,
    trigger_event_id: str,
    correlation_id: str,
) -> TrainedRun:
    """Fit, evaluate on the raw holdout through the served pipeline, and log everything to MLflow.

    ``client`` finds a run an earlier delivery of the same trigger finished. The new run is logged through
    MLflow's fluent API (``mlflow.sklearn.log_model`` needs an active run), so to the process-wide server,
    which :func:`shared.runtime.mlflow_client.mlflow_client` set to the client's own when it made it.
    """
    if (done := find_run_for_trigger(client, manifest.dataset, trigger_event_id)) is not None:
        return done

    tracer = trace.get_tracer("mesh.training")
    with tracer.start_as_current_span(
        "training.load", attributes={"mesh.feature_set_id": manifest.feature_set_id}
    ):
        train_frame = pl.read_parquet(manifest.train_path)
        holdout = pl.read_parquet(manifest.holdout_path)
        pipeline = json.loads(manifest.pipeline_path.read_text())
    target = manifest.target

    # One native (OpenMP/BLAS) thread, in this worker thread where the fit runs: OpenMP threads spin while
    # they wait, and two training replicas each fitting a HistGradientBoosting on 2 threads beside the
    # other services of a 2-core machine held each other up for minutes (test_training_replicas: a
    # 600-row fit took over 100 s; py-spy showed both in TreeGrower.split_next). The mesh scales training
    # by replicas, as serving by workers.
    fit_span = tracer.start_as_current_span("training.fit", attributes={"mesh.rows": train_frame.height})
    with fit_span, limit_native_threads():
        model = fit_servable(config, train_frame, target, pipeline)
        require_reviewed(model, config.estimator, config.task)
    with tracer.start_as_current_span("training.evaluate") as span:
        holdout_outputs = predict_outputs(model, holdout.drop(target), config.task)
        metrics = score(holdout[target].to_numpy(), holdout_outputs)
        span.set_attributes({f"mesh.metric.{k}": v for k, v in metrics.items()})

    declared = FeaturePipeline.from_dict(pipeline)
    records = holdout.select(declared.spec.input_columns)
    example = records.head(5).to_pandas()
    # What pyfunc's predict returns (the label or the value), as serving answers it.
    outputs = predict_outputs(model, records.head(5), config.task).predictions
    signature = model_signature(declared.schema, declared.spec.input_columns, outputs)
    params: dict[str, Any] = {
        "task": config.task,
        "estimator": config.estimator.resolved_path(config.task),
        **{f"estimator.{k}": v for k, v in config.estimator.params.items()},
        "seed": config.seed,
        "feature_set_id": manifest.feature_set_id,
        "spec_hash": manifest.spec_hash,
        "window_snapshots": len(manifest.snapshot_ids),
        "train_rows": manifest.train_rows,
        "holdout_rows": manifest.holdout_rows,
    }

    mlflow.set_experiment(experiment_name(manifest.dataset))
    run_name = f"{config.model_name}-{manifest.feature_set_id[:8]}"
    with tracer.start_as_current_span("training.log"), mlflow.start_run(run_name=run_name) as run:
        mlflow.set_tags(
            {
                "mesh.dataset": manifest.dataset,
                "mesh.model_name": config.model_name,
                "mesh.feature_set_id": manifest.feature_set_id,
                "mesh.snapshot_ids": json.dumps(manifest.snapshot_ids),
                "mesh.feature_set_dir": manifest.directory,
                "mesh.trigger": trigger_type,
                TAG_TRIGGER: trigger_event_id,
                "mesh.correlation_id": correlation_id,
            }
        )
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.log_input(
            from_polars(
                train_frame, source=str(manifest.train_path), targets=target, name=manifest.feature_set_id
            ),
            context="training",
        )
        mlflow.log_input(
            from_polars(
                holdout, source=str(manifest.holdout_path), targets=target, name=manifest.feature_set_id
            ),
            context="holdout",
        )
        with SKOPS_FILES:  # log_model writes the model with skops and reads it back
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                signature=signature,
                input_example=example,
                serialization_format="skops",
                pyfunc_predict_fn="predict",  # the label (or value) serving answers with
                skops_trusted_types=trusted_types(config.estimator, config.task),
                pip_requirements=model_requirements(config),
            )
        mlflow.log_artifact(str(manifest.pipeline_path), artifact_path="features")
        mlflow.log_artifact(str(manifest.profile_path), artifact_path="features")
        mlflow.log_dict(output_profile(holdout_outputs), OUTPUT_PROFILE)
        # Written last: a run carrying this tag is complete, which is what the idempotency check trusts.
        mlflow.set_tag("mesh.model_uri", info.model_uri)
    return TrainedRun(run_id=run.info.run_id, model_uri=info.model_uri, metrics=metrics, params=params)
