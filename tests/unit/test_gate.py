"""The registry's pure gate rule: sanity problems, metric floors, then a margin over the champion."""

from __future__ import annotations

import math

import pytest

from services.registry.gate import judge
from shared.ml.modeling import GateConfig, ModelConfig, load_model_config
from shared.runtime.settings import REPO_ROOT

DEMO = load_model_config(REPO_ROOT / "deploy" / "config", "demo")


def _with(gate: ModelConfig, task: str = "binary") -> ModelConfig:
    return DEMO.model_copy(update={"gate": gate, "task": task})


@pytest.fixture(scope="module")
def gate() -> ModelConfig:
    """The demo model and its gate: roc_auc floor 0.70, accuracy floor 0.65, margin 0.005 on roc_auc."""
    assert DEMO.primary_metric == "roc_auc"
    assert DEMO.gate.floors == {"roc_auc": 0.70, "accuracy": 0.65}
    assert DEMO.gate.margin == 0.005
    return DEMO


GOOD = {"roc_auc": 0.82, "accuracy": 0.78}


def test_a_first_model_needs_only_the_floors(gate: ModelConfig) -> None:
    assert judge(GOOD, None, [], gate) == (True, [])
    # Exactly at a floor passes.
    assert judge({"roc_auc": 0.70, "accuracy": 0.65}, None, [], gate) == (True, [])


@pytest.mark.parametrize(
    ("metrics", "metric"),
    [
        ({"roc_auc": 0.69, "accuracy": 0.78}, "roc_auc"),
        ({"roc_auc": 0.82, "accuracy": 0.60}, "accuracy"),
    ],
)
def test_below_a_floor_is_rejected_naming_the_metric(
    gate: ModelConfig, metrics: dict[str, float], metric: str
) -> None:
    promote, reasons = judge(metrics, None, [], gate)
    assert promote is False
    assert len(reasons) == 1
    assert reasons[0].startswith(metric)
    assert "floor" in reasons[0]


def test_every_failing_floor_is_listed(gate: ModelConfig) -> None:
    promote, reasons = judge({"roc_auc": 0.5, "accuracy": 0.5}, None, [], gate)
    assert promote is False
    assert [r.split()[0] for r in reasons] == ["roc_auc", "accuracy"]


def test_a_nan_or_missing_metric_fails_its_floor(gate: ModelConfig) -> None:
    promote, reasons = judge({"roc_auc": math.nan, "accuracy": 0.9}, None, [], gate)
    assert promote is False
    assert len(reasons) == 1 and reasons[0].startswith("roc_auc")
    promote, reasons = judge({"roc_auc": 0.9}, None, [], gate)
    assert promote is False
    assert len(reasons) == 1 and reasons[0].startswith("accuracy")


def test_a_nan_primary_metric_never_beats_a_champion() -> None:
    gate = _with(GateConfig(margin=0.0))  # no floors: only the comparison can reject
    assert judge({"roc_auc": math.nan}, {"roc_auc": 0.8}, [], gate)[0] is False
    assert judge({"roc_auc": 0.9}, {"roc_auc": math.nan}, [], gate)[0] is False


def test_equal_to_the_champion_is_rejected_naming_the_margin(gate: ModelConfig) -> None:
    promote, reasons = judge(GOOD, dict(GOOD), [], gate)
    assert promote is False
    assert len(reasons) == 1
    assert "margin 0.005" in reasons[0]
    assert "champion" in reasons[0]


def test_better_by_less_than_the_margin_is_rejected(gate: ModelConfig) -> None:
    champion = {"roc_auc": 0.80, "accuracy": 0.78}
    promote, reasons = judge({"roc_auc": 0.804, "accuracy": 0.78}, champion, [], gate)
    assert promote is False
    assert len(reasons) == 1 and "margin" in reasons[0]


def test_worse_than_the_champion_is_rejected(gate: ModelConfig) -> None:
    promote, reasons = judge({"roc_auc": 0.75, "accuracy": 0.78}, GOOD, [], gate)
    assert promote is False
    assert "margin" in reasons[0]


def test_better_by_the_margin_or_more_is_promoted(gate: ModelConfig) -> None:
    champion = {"roc_auc": 0.80, "accuracy": 0.78}
    assert judge({"roc_auc": 0.805, "accuracy": 0.70}, champion, [], gate) == (True, [])
    assert judge({"roc_auc": 0.90, "accuracy": 0.70}, champion, [], gate) == (True, [])
    exact = _with(GateConfig(margin=0.25))  # binary-exact values: exactly the margin is enough
    assert judge({"roc_auc": 0.75}, {"roc_auc": 0.5}, [], exact) == (True, [])


def test_only_the_primary_metric_is_compared_with_the_champion(gate: ModelConfig) -> None:
    champion = {"roc_auc": 0.80, "accuracy": 0.95}
    assert judge({"roc_auc": 0.85, "accuracy": 0.70}, champion, [], gate) == (True, [])


def test_a_different_primary_metric_is_honoured() -> None:
    gate = _with(GateConfig(primary_metric="f1", margin=0.01))
    assert judge({"f1": 0.60, "roc_auc": 0.5}, {"f1": 0.55, "roc_auc": 0.9}, [], gate)[0] is True
    promote, reasons = judge({"f1": 0.555, "roc_auc": 0.99}, {"f1": 0.55, "roc_auc": 0.5}, [], gate)
    assert promote is False
    assert reasons[0].startswith("f1")


def test_sanity_problems_always_reject_and_are_listed(gate: ModelConfig) -> None:
    problems = ["constant predictions (std 0 < 0.001)", "single-record latency 90.0 ms over the budget"]
    for champion in (None, {"roc_auc": 0.5, "accuracy": 0.5}):
        promote, reasons = judge({"roc_auc": 0.99, "accuracy": 0.99}, champion, problems, gate)
        assert promote is False
        assert reasons == problems


def test_sanity_problems_come_first_and_other_reasons_still_follow(gate: ModelConfig) -> None:
    problems = ["3 non-finite predictions on the holdout"]
    promote, reasons = judge({"roc_auc": 0.6, "accuracy": 0.9}, GOOD, problems, gate)
    assert promote is False
    assert reasons[0] == problems[0]
    assert any(r.startswith("roc_auc") and "floor" in r for r in reasons)
    assert any("margin" in r for r in reasons)
    assert len(reasons) == 3


def test_judge_does_not_mutate_the_problems_list(gate: ModelConfig) -> None:
    problems = ["constant predictions"]
    judge({"roc_auc": 0.5, "accuracy": 0.5}, GOOD, problems, gate)
    assert problems == ["constant predictions"]


def test_a_lower_is_better_metric_is_judged_downwards() -> None:
    config = _with(
        GateConfig(primary_metric="rmse", margin=0.5, floors={"rmse": 60.0, "r2": 0.2}), "regression"
    )
    assert judge({"rmse": 50.0, "r2": 0.4}, None, [], config) == (True, [])
    promote, reasons = judge({"rmse": 61.0, "r2": 0.1}, None, [], config)
    assert not promote
    assert reasons == ["rmse 61.0000 is above the ceiling 60.0", "r2 0.1000 is below the floor 0.2"]
    # Beating the champion on rmse means lower by at least the margin.
    assert judge({"rmse": 49.5, "r2": 0.4}, {"rmse": 50.0}, [], config) == (True, [])
    promote, reasons = judge({"rmse": 49.9, "r2": 0.4}, {"rmse": 50.0}, [], config)
    assert not promote and "does not beat the champion's 50.0000 by the margin 0.5" in reasons[0]


def test_a_metric_not_of_the_task_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"gate.floors.rmse: not a binary metric"):
        ModelConfig.model_validate({**DEMO.model_dump(by_alias=True), "gate": {"floors": {"rmse": 1.0}}})
    with pytest.raises(ValueError, match=r"gate.primary_metric 'roc_auc' is not a regression metric"):
        ModelConfig.model_validate(
            {**DEMO.model_dump(by_alias=True), "task": "regression", "gate": {"primary_metric": "roc_auc"}}
        )
