"""Data retention as the features service runs it, when ``retention_days`` is set: every
``retention_interval_s``, one replica (whichever takes the lease) prunes what is older and unneeded."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from services.features.deps import FeaturesDeps
from shared.events import utcnow
from shared.ml.retention import prune
from shared.runtime.mlflow_client import mlflow_client

LEASE_KEY = "mesh:features:pruning"


async def prune_once(deps: FeaturesDeps) -> None:
    settings = deps.settings
    assert settings.retention_days is not None
    # One pass per interval across the replicas; the lease expires by itself, so a replica killed
    # mid-pass blocks nobody beyond it.
    lease_ms = int(settings.retention_interval_s * 1000)
    if not await deps.bus.redis.set(LEASE_KEY, "1", nx=True, px=lease_ms):
        return
    before = utcnow() - timedelta(days=settings.retention_days)
    pruned = await asyncio.to_thread(
        prune,
        settings.effective_data_root,
        settings.config_dir,
        mlflow_client(settings),
        before=before,
        trace_experiment=settings.trace_experiment,
    )
    deps.log.info(
        "pruned",
        before=before.isoformat(),
        snapshots=len(pruned.snapshots),
        feature_sets=len(pruned.feature_sets),
        traces=pruned.traces,
        kept_referenced=len(pruned.kept_referenced),
        kept_in_window=len(pruned.kept_in_window),
    )
