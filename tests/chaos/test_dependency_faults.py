"""The stack's dependencies failing under it: Redis stopped and restarted mid-flow (AOF on, as compose runs
it), Redis emptied by FLUSHALL, MLflow down while a model trains and while one is registered.

Each service must ride it out by itself: the same process before and after (``mesh up`` brings back only
the dependency), no tight loop while it is gone, and every upload made before, during or after the fault
comes to exactly one feature set, run and registry decision, with no registered version half-made."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from mlflow.entities import ViewType

from shared.ops.driver import MeshDriver
from tests.support.faults import (
    CHURN,
    cpu_seconds,
    in_hand,
    judge,
    pids,
    restart,
    signal_tree,
    uploading,
)
from tests.support.groups import letters

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1500)]

OUTAGE_S = 10  # how long a dependency stays down: several of the bus's reconnect backoffs and sweeps


def test_every_service_rides_out_a_redis_restart_mid_flow(
    stack: MeshDriver, chaos_report: dict[str, Any]
) -> None:
    settings = stack.settings
    before, letters_before = pids(settings), len(letters(stack.redis))
    ids: list[str] = []
    failures: list[str] = []
    figures: dict[str, Any] = {"outage_s": OUTAGE_S}
    with uploading(stack, ids, failures, seed=100):
        figures["features_entries_in_hand"] = in_hand(stack.redis, "features")
        figures["redis_stopped_in_s"] = signal_tree(settings, "redis", signal.SIGTERM)
        time.sleep(OUTAGE_S)
        restart(settings)
    figures["upload_attempts_failed"] = sorted(set(failures))
    chaos_report["redis_restart"] = figures
    judge(stack, ids, figures, before=before, letters_before=letters_before)
    assert not any("answered 500" in f for f in failures), failures  # unavailable, not broken


def test_every_service_recovers_from_flushall_without_a_tight_loop(
    stack: MeshDriver, chaos_report: dict[str, Any]
) -> None:
    settings = stack.settings
    before = pids(settings)
    idle_before = cpu_seconds(settings)
    time.sleep(OUTAGE_S)
    idle = {name: used - idle_before[name] for name, used in cpu_seconds(settings).items()}
    stack.redis.flushall()
    flushed = cpu_seconds(settings)
    time.sleep(OUTAGE_S)
    after_flush = {name: used - flushed[name] for name, used in cpu_seconds(settings).items()}
    ids: list[str] = []
    failures: list[str] = []
    figures: dict[str, Any] = {
        "cpu_s_per_10s_idle": {n: round(v, 2) for n, v in idle.items()},
        "cpu_s_per_10s_after_flushall": {n: round(v, 2) for n, v in after_flush.items()},
    }
    with uploading(stack, ids, failures, seed=200):
        pass
    chaos_report["flushall"] = figures
    judge(stack, ids, figures, before=before, letters_before=0)  # FLUSHALL took the earlier ones too
    # A consumer spinning on NOGROUP would burn a core; re-creating its groups costs a few calls.
    assert all(used < 2.0 for used in after_flush.values()), figures


def test_training_and_registration_complete_once_mlflow_returns(
    stack: MeshDriver, chaos_report: dict[str, Any]
) -> None:
    settings = stack.settings
    before, letters_before = pids(settings), len(letters(stack.redis))
    ids: list[str] = []
    failures: list[str] = []
    outages = []
    with uploading(stack, ids, failures, seed=300):
        for service in ("training", "registry"):  # MLflow goes while a fit is logged, then a registration
            held = in_hand(stack.redis, service, timeout=60)
            stopped = signal_tree(settings, "mlflow", signal.SIGKILL)
            time.sleep(OUTAGE_S)
            restart(settings)
            outages.append({"during": service, "entries_in_hand": held, "mlflow_stopped_in_s": stopped})
    figures: dict[str, Any] = {"outages": outages, "outage_s": OUTAGE_S}
    chaos_report["mlflow_down"] = figures
    judge(stack, ids, figures, before=before, letters_before=letters_before)
    # No version half-made: each one registered has its run finished, its provenance tags and the model.
    versions = stack.mlflow.search_model_versions(f"name = '{CHURN}'")
    for version in versions:
        run = stack.mlflow.get_run(version.run_id)
        assert run.info.status == "FINISHED", (version.version, run.info.status)
        assert {"mesh.feature_set_id", "mesh.snapshot_ids", "mesh.metrics"} <= set(version.tags), version
        assert stack.mlflow.list_artifacts(version.run_id, "model"), f"version {version.version} has no model"
    experiment = stack.mlflow.get_experiment_by_name("mesh-demo")
    assert experiment is not None
    unfinished = stack.mlflow.search_runs(
        [experiment.experiment_id], "attributes.status != 'FINISHED'", run_view_type=ViewType.ALL
    )
    figures["runs_left_unfinished"] = [(r.info.run_id, r.info.status) for r in unfinished]
    figures["versions"] = len(versions)
    chaos_report["mlflow_down"] = figures
    assert not unfinished, figures["runs_left_unfinished"]
