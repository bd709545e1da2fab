"""The retrain decision: hysteresis, one retrain per episode, cooldown, hourly cap, label guard, reasons."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.monitor.policy import Decision, TriggerPolicy, WindowSignals
from shared.ml.monitoring import (
    DriftConfig,
    MonitorConfig,
    PerformanceConfig,
    RetrainConfig,
    Threshold,
    WindowConfig,
    load_monitor_config,
)
from shared.runtime.settings import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "deploy" / "config"
LABELS = 1_000  # plenty of labelled rows, unless a test is about that guard


def make_config(cooldown_s: float = 300, max_per_hour: int = 3, min_features: int = 1) -> MonitorConfig:
    return MonitorConfig(
        dataset="demo",
        model_name="churn-demo",
        drift=DriftConfig(
            psi=Threshold(fire=0.25, clear=0.10),
            ks=Threshold(fire=0.15, clear=0.10),
            min_features=min_features,
        ),
        performance=PerformanceConfig(metric="accuracy", max_drop=Threshold(fire=0.10, clear=0.04)),
        retrain=RetrainConfig(cooldown_s=cooldown_s, max_per_hour=max_per_hour, min_labelled_rows=300),
    )


def signals(
    psi: float = 0.02, ks: float = 0.05, drop: float | None = None, labelled: int = LABELS
) -> WindowSignals:
    """One window: ``psi``/``ks`` on income, quiet scores elsewhere."""
    return WindowSignals(
        drift={
            "income": {"psi": psi, "ks": ks, "wasserstein": 0.1, "null_share_delta": 0.0},
            "age": {"psi": 0.02, "ks": 0.05, "wasserstein": 0.1, "null_share_delta": 0.0},
            "region": {"psi": 0.01, "chi2_p": 0.6, "null_share_delta": 0.0},
        },
        performance_drop=drop,
        labelled_rows=labelled,
    )


DRIFTED = signals(psi=0.40, ks=0.30)
QUIET = signals()
BETWEEN = signals(psi=0.15, ks=0.12)  # above clear, below fire


def test_demo_config_loads_with_the_documented_thresholds() -> None:
    config = load_monitor_config(CONFIG_DIR, "demo")
    assert (config.dataset, config.model_name) == ("demo", "churn-demo")
    assert config.drift.psi == Threshold(fire=0.25, clear=0.10)
    assert config.window == WindowConfig(size=500, min_size=200, max_seconds=120)
    assert config.retrain == RetrainConfig(
        cooldown_s=300, max_per_hour=3, min_labelled_rows=1000, window_snapshots=1
    )


def test_config_validation() -> None:
    with pytest.raises(ValidationError, match="clear"):
        Threshold(fire=0.1, clear=0.2)
    with pytest.raises(ValidationError, match="min_size"):
        WindowConfig(size=100, min_size=200)
    with pytest.raises(ValidationError, match="extra"):
        Threshold.model_validate({"fire": 0.2, "clear": 0.1, "fier": 0.3})
    with pytest.raises(FileNotFoundError):
        load_monitor_config(CONFIG_DIR, "no-such-dataset")


def test_hysteresis_fires_above_fire_holds_between_and_clears_below_clear() -> None:
    policy = TriggerPolicy(make_config())
    # Between the thresholds with no episode: nothing starts.
    quiet_between = policy.decide(BETWEEN, now=0)
    assert not quiet_between.episode_active and quiet_between.fired == []

    started = policy.decide(DRIFTED, now=10)
    assert started.episode_started and started.episode_active and started.retrain
    assert started.fired == ["psi:income", "ks:income"]

    # Back between clear and fire: the episode holds (and does not retrain again).
    held = policy.decide(BETWEEN, now=20)
    assert held.episode_active and not held.episode_started and not held.retrain
    assert any("not yet below clear" in r for r in held.reasons)

    cleared = policy.decide(QUIET, now=30)
    assert not cleared.episode_active and not cleared.retrain
    assert any("cleared" in r for r in cleared.reasons)


def test_exactly_at_fire_fires_and_exactly_at_clear_holds() -> None:
    policy = TriggerPolicy(make_config())
    assert policy.decide(signals(psi=0.25), now=0).fired == ["psi:income"]
    assert policy.decide(signals(psi=0.10), now=1).episode_active
    assert not policy.decide(signals(psi=0.0999), now=2).episode_active


def test_a_burst_of_drifted_windows_retrains_exactly_once() -> None:
    policy = TriggerPolicy(make_config(cooldown_s=0, max_per_hour=100))
    decisions = [policy.decide(DRIFTED, now=60.0 * i) for i in range(20)]
    assert sum(d.retrain for d in decisions) == 1
    assert decisions[0].retrain and sum(d.episode_started for d in decisions) == 1
    assert all("already retrained in this drift episode" in d.reasons for d in decisions[1:])


def test_a_new_episode_retrains_again_but_only_after_the_cooldown() -> None:
    policy = TriggerPolicy(make_config(cooldown_s=300))
    assert policy.decide(DRIFTED, now=0).retrain
    assert not policy.decide(QUIET, now=60).episode_active

    early = policy.decide(DRIFTED, now=120)
    assert early.episode_started and not early.retrain
    assert "cooldown: 180 s left" in early.reasons

    # Same episode, still drifted, cooldown over: the held retrain goes ahead.
    assert not policy.decide(DRIFTED, now=299).retrain
    late = policy.decide(DRIFTED, now=300)
    assert late.retrain and not late.episode_started


def test_retrains_per_hour_are_capped() -> None:
    policy = TriggerPolicy(make_config(cooldown_s=0, max_per_hour=3))
    retrains = []
    for episode in range(5):
        start = 600.0 * episode  # five episodes within 2400 s
        retrains.append(policy.decide(DRIFTED, now=start).retrain)
        policy.decide(QUIET, now=start + 300)
    assert retrains == [True, True, True, False, False]
    capped = policy.decide(DRIFTED, now=3000)
    assert "retrains this hour at the cap of 3" in capped.reasons and not capped.retrain

    # The first retrain (t=0) leaves the rolling hour at t=3600: the still-active episode may retrain.
    assert policy.decide(DRIFTED, now=3600).retrain


def test_holds_without_labels_then_fires_in_the_same_episode() -> None:
    policy = TriggerPolicy(make_config())
    waiting = policy.decide(signals(psi=0.40, labelled=40), now=0)
    assert waiting.episode_started and not waiting.retrain
    assert "need 300 labelled rows, have 40" in waiting.reasons

    # Between thresholds: still the same episode, and now the labels are there.
    ready = policy.decide(signals(psi=0.15, labelled=320), now=60)
    assert ready.retrain and not ready.episode_started and ready.episode_active


def test_performance_decay_alone_starts_an_episode() -> None:
    policy = TriggerPolicy(make_config())
    decayed = policy.decide(signals(drop=0.15), now=0)
    assert decayed.fired == ["performance:accuracy"]
    assert decayed.episode_started and decayed.retrain

    # A window without enough labels (drop None) keeps the last reading: the episode does not end, so
    # the next labelled window cannot start a second episode.
    assert policy.decide(signals(drop=None), now=60).episode_active
    again = policy.decide(signals(drop=0.12), now=600)
    assert not again.episode_started and not again.retrain
    assert policy.decide(signals(drop=0.01), now=660).episode_active is False


def test_min_features_counts_features_not_methods() -> None:
    policy = TriggerPolicy(make_config(min_features=2))
    one = policy.decide(DRIFTED, now=0)  # psi and ks both fire, but on income alone
    assert not one.episode_active and one.fired == ["psi:income", "ks:income"]
    two = signals(psi=0.40)
    two.drift["age"]["ks"] = 0.2
    assert policy.decide(two, now=60).episode_started


def test_missing_scores_neither_fire_nor_clear() -> None:
    policy = TriggerPolicy(make_config())
    nan = float("nan")
    assert not policy.decide(signals(psi=nan, ks=nan), now=0).episode_active
    assert policy.decide(DRIFTED, now=10).episode_active
    # A NaN score, or a window without drift scores at all (performance only), is no evidence that the
    # drift went away: the last reading of psi:income (0.40) keeps the episode.
    assert policy.decide(signals(psi=nan, ks=0.01), now=20).episode_active
    assert policy.decide(
        WindowSignals(drift={}, performance_drop=0.0, labelled_rows=LABELS), now=30
    ).episode_active
    assert not policy.decide(signals(psi=0.01, ks=0.01), now=40).episode_active


def test_every_decision_carries_reasons() -> None:
    policy = TriggerPolicy(make_config())
    script = [QUIET, BETWEEN, DRIFTED, DRIFTED, BETWEEN, QUIET, signals(drop=0.2, labelled=10), QUIET]
    decisions = [policy.decide(s, now=100.0 * i) for i, s in enumerate(script)]
    assert all(d.reasons and all(isinstance(r, str) and r for r in d.reasons) for d in decisions)
    assert "no test above its fire threshold" in decisions[0].reasons
    assert "ks:income 0.300 >= 0.15" in decisions[2].reasons
    as_dict = decisions[2].to_dict()
    assert as_dict == {
        "retrain": True,
        "episode_started": True,
        "episode_active": True,
        "fired": ["psi:income", "ks:income"],
        "reasons": decisions[2].reasons,
    }
    assert isinstance(decisions[2], Decision)


def test_the_size_aware_test_fires_on_p_values_only_when_configured() -> None:
    base = make_config()
    sized = base.model_copy(
        update={"drift": base.drift.model_copy(update={"significance": Threshold(fire=6, clear=2)})}
    )
    window = signals()
    window.drift["income"]["ks_p"] = 1e-9  # a small shift in a large window: KS 0.05, far below its 0.15
    window.drift["region"]["chi2_p"] = 0.3
    assert not TriggerPolicy(base).decide(window, now=0).fired  # unset: scored, never fires
    decision = TriggerPolicy(sized).decide(window, now=0)
    assert decision.fired == ["significance:income"] and decision.episode_started
    assert "significance:income 9.000 >= 6.0" in decision.reasons
    # Between clear (p = 0.01) and fire it holds; above p = 0.01 it clears.
    policy = TriggerPolicy(sized)
    policy.decide(window, now=0)
    window.drift["income"]["ks_p"] = 1e-4
    assert policy.decide(window, now=60).episode_active
    window.drift["income"]["ks_p"] = 0.2
    assert not policy.decide(window, now=120).episode_active
