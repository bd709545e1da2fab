"""Data retention on a real MLflow server: old snapshots, feature sets and traces are pruned, never what a
registered model version references nor the newest snapshots a training window takes; ``mesh prune``
says what it did (or, dry, would do)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from shared.events import utcnow
from shared.ml.datasets import DatasetSchema
from shared.ml.feature_sets import FeatureSetManifest, build_feature_set
from shared.ml.features import FeatureSpec
from shared.ml.retention import prune
from shared.ml.snapshots import SnapshotStore
from shared.ops.cli import app
from shared.ops.demo_data import generate
from shared.runtime.mlflow_client import mlflow_client
from shared.runtime.settings import MeshSettings
from tests.support.data import CONFIG_DIR, commit_snapshot

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SNAPSHOTS = 9  # the demo's training window takes the newest 5
# Snapshot ids of this module's own: the session's MLflow holds other tests' versions of the demo dataset,
# which reference plain ids (s1, s2, ...) of their own data roots.
RUN = uuid.uuid4().hex[:6]


def snap(k: int) -> str:
    return f"{RUN}-s{k}"


LONG_AGO = "2026-01-01T00:00:00+00:00"


def _make_old(feature_set: FeatureSetManifest) -> None:
    path = feature_set.dir / "manifest.json"
    path.write_text(feature_set.model_copy(update={"created_at": LONG_AGO}).model_dump_json())


@pytest.fixture
def stored(
    settings: MeshSettings, mlflow_uri: str, schema: DatasetSchema, spec: FeatureSpec, tmp_path: Path
) -> tuple[MeshSettings, dict[str, str]]:
    """Nine old snapshots of the demo dataset, three old feature sets and one new one; a registered
    version of a model trained on the second snapshot's feature set. Names of what is what."""
    root = tmp_path / "data"
    settings = settings.model_copy(
        update={
            "data_root": root,
            "mlflow_tracking_uri": mlflow_uri,
            "trace_experiment": f"traces-{tmp_path.name}",
        }
    )
    store = SnapshotStore(root)
    snaps = [commit_snapshot(store, schema, snap(k), generate(rows=80, seed=k), day=k) for k in range(1, 10)]
    referenced = build_feature_set(root, schema, spec, snaps[1:2])
    unreferenced = build_feature_set(root, schema, spec, snaps[2:3])
    also_old = build_feature_set(root, schema, spec, snaps[3:4])
    fresh = build_feature_set(root, schema, spec, snaps[4:5])
    for feature_set in (referenced, unreferenced, also_old):
        _make_old(feature_set)

    client = mlflow_client(settings)
    name = f"retention-{tmp_path.name}"
    client.create_registered_model(name)
    mlflow.set_experiment(f"runs-{tmp_path.name}")
    with mlflow.start_run() as run:  # a version's source must be a run's artifact
        mlflow.log_text("stand-in", "model/MLmodel")
    tags = {
        "mesh.dataset": "demo",
        "mesh.snapshot_ids": json.dumps([snap(2)]),
        "mesh.feature_set_id": referenced.feature_set_id,
    }
    client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id, tags=tags)
    mlflow.set_experiment(settings.trace_experiment)
    with mlflow.start_span("an upload's trace"):
        pass
    mlflow.flush_trace_async_logging()  # exported now, not at exit when the server may be gone
    ids = {
        "referenced": referenced.feature_set_id,
        "unreferenced": unreferenced.feature_set_id,
        "also_old": also_old.feature_set_id,
        "fresh": fresh.feature_set_id,
    }
    return settings, ids


def test_prune_keeps_what_versions_reference_and_the_training_window(
    stored: tuple[MeshSettings, dict[str, str]],
) -> None:
    settings, ids = stored
    client = mlflow_client(settings)
    root = settings.effective_data_root
    before = utcnow() - timedelta(days=1)
    dry = prune(
        root, CONFIG_DIR, client, before=before, trace_experiment=settings.trace_experiment, dry_run=True
    )
    assert len(SnapshotStore(root).list("demo")) == SNAPSHOTS, "a dry run deleted something"

    pruned = prune(root, CONFIG_DIR, client, before=before, trace_experiment=settings.trace_experiment)
    assert pruned.snapshots == dry.snapshots == [f"demo/{snap(k)}" for k in (1, 3, 4)]
    assert f"demo/{snap(2)}" in pruned.kept_referenced
    assert pruned.kept_in_window == [f"demo/{snap(k)}" for k in range(5, 10)]
    assert sorted(pruned.feature_sets) == sorted([f"demo/{ids['unreferenced']}", f"demo/{ids['also_old']}"])
    assert pruned.traces == 0  # the one trace is young

    left = SnapshotStore(root).list("demo")
    assert [m.snapshot_id for m in left] == [snap(2), *(snap(k) for k in range(5, 10))]
    assert sorted(p.stem for p in (root / "datasets" / "demo" / "snapshots").glob("*.parquet")) == sorted(
        m.snapshot_id for m in left
    )
    features = {p.name for p in (root / "features" / "demo").iterdir()}
    assert features == {ids["referenced"], ids["fresh"]}

    again = prune(root, CONFIG_DIR, client, before=before, trace_experiment=settings.trace_experiment)
    assert (again.snapshots, again.feature_sets, again.traces) == ([], [], 0)

    # A day later, what was young is old too; the window and the version's references still stay.
    later = prune(
        root,
        CONFIG_DIR,
        client,
        before=utcnow() + timedelta(seconds=1),
        trace_experiment=settings.trace_experiment,
    )
    assert later.feature_sets == [f"demo/{ids['fresh']}"] and later.traces == 1
    assert later.snapshots == [] and {p.name for p in (root / "features" / "demo").iterdir()} == {
        ids["referenced"]
    }


def test_mesh_prune_says_what_it_would_delete_and_needs_an_age(
    stored: tuple[MeshSettings, dict[str, str]],
) -> None:
    settings, _ = stored
    env = {
        "MESH_DATA_ROOT": str(settings.effective_data_root),
        "MESH_MLFLOW_TRACKING_URI": settings.effective_mlflow_uri,
        "MESH_TRACE_EXPERIMENT": settings.trace_experiment,
        "MESH_RETENTION_DAYS": None,
    }
    refused = CliRunner().invoke(app, ["prune"], env=env)
    assert refused.exit_code == 2 and "--older-than-days" in refused.output

    dry = CliRunner().invoke(app, ["prune", "--older-than-days", "30", "--dry-run", "--json"], env=env)
    assert dry.exit_code == 0, dry.output
    said = json.loads(dry.stdout)
    assert said["dry_run"] is True and said["snapshots"] == [f"demo/{snap(k)}" for k in (1, 3, 4)]
    assert datetime.fromisoformat(said["before"]) < datetime.now(UTC) - timedelta(days=29)
    assert len(SnapshotStore(settings.effective_data_root).list("demo")) == SNAPSHOTS

    done = CliRunner().invoke(app, ["prune", "--older-than-days", "30"], env=env)
    assert done.exit_code == 0 and "snapshots deleted" in done.stdout
    assert len(SnapshotStore(settings.effective_data_root).list("demo")) == SNAPSHOTS - 3
