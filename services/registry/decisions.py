"""The gate's decision on one trained model: taken once, recorded on the candidate's run, then acted on.

A redelivered ``model.trained`` (its done-marker lost) finds the recorded decision and only repeats its
effect, and registering is itself once per run: a candidate is never judged twice nor registered twice.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from services.registry.aliases import alias_version, aliases_lock, register_and_promote
from services.registry.deps import RegistryDeps
from services.registry.gate import GateDecision, evaluate_candidate
from shared.bus import PermanentError
from shared.events import ModelPromoted, ModelRejected, ModelTrained
from shared.ml.modeling import CHAMPION, ModelConfig

TAG_GATE = "mesh.gate"  # on the candidate's run: the decision and its evidence, for idempotency


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


def decide(
    client: MlflowClient, trained: ModelTrained, data_root: Path, config_for: Callable[[str], ModelConfig]
) -> ModelPromoted | ModelRejected:
    """The recorded decision on ``trained``, or a new one recorded now; then promote or reject.

    ``config_for`` is asked only when there is something to judge: a recorded decision stands as taken.
    """
    decision = recorded_decision(client, trained.run_id)
    champion = alias_version(client, trained.model_name, CHAMPION)
    if decision is None:
        decision = evaluate_candidate(trained, data_root, config_for(trained.model_name), champion)
        record_decision(client, trained.run_id, decision)
    if decision.promote:
        return register_and_promote(client, trained, decision, champion)
    return rejected(trained, decision)


async def decide_under_lock(deps: RegistryDeps, trained: ModelTrained) -> ModelPromoted | ModelRejected:
    """:func:`decide` under the model's lock, so that concurrent candidates are judged one after the other,
    each against the champion the one before left."""
    lock = aliases_lock(deps.bus.redis, trained.model_name, timeout=300, blocking_timeout=600)
    async with lock:
        try:
            return await asyncio.to_thread(
                decide, deps.mlflow, trained, deps.settings.effective_data_root, deps.config_for
            )
        except FileNotFoundError as exc:  # the candidate's feature set is gone: judging it cannot succeed
            raise PermanentError(str(exc)) from exc
