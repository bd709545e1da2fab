"""The monitor's configuration and the one place where retraining is decided.

``TriggerPolicy.decide`` turns the signals of one window (drift scores, the accuracy drop, how many new
labelled rows exist) into a ``Decision``. Everything about *when* to retrain lives here, so the rules can
be unit-tested without Redis, clocks or models:

* Hysteresis: a test *fires* when its score reaches its ``fire`` threshold. A drift episode starts when
  at least ``drift.min_features`` features have a firing drift test, or the performance test fires. It
  ends only when every score is below its ``clear`` threshold; scores in between keep it as it is, so a
  statistic wobbling around one threshold cannot start episode after episode. A test without a fresh
  score in a window (too few labels, no drift window, NaN) keeps its last reading for clearing.
* One episode causes at most one retrain, however many windows fire during it.
* Guards: enough new labelled rows, a cooldown since the last retrain and a cap per rolling hour.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, TypeGuard

from pydantic import BaseModel

from shared.ml.monitoring import OUTPUT_DRIFT, MonitorConfig, Threshold

# The drift statistics the policy reads from ``window_drift`` scores against fixed thresholds; ks_p and
# chi2_p feed the size-aware test (significance_score), and the others (wasserstein, null_share_delta) are
# reported for people, not used to decide.
DRIFT_METHODS = ("psi", "ks")
SIGNIFICANCE = "significance"  # the size-aware test (DriftConfig.significance)
PERFORMANCE_TEST = "performance"
HOUR_S = 3600.0


@dataclass
class WindowSignals:
    """What one window says: drift scores per feature per method, the accuracy drop, new labelled rows."""

    drift: dict[str, dict[str, float]]
    performance_drop: float | None
    labelled_rows: int


@dataclass
class Decision:
    retrain: bool
    episode_started: bool
    episode_active: bool
    fired: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _known(score: float | None) -> TypeGuard[float]:
    # NaN means the window had nothing to compare (e.g. every value missing): no evidence either way.
    return score is not None and math.isfinite(score)


def significance_score(scores: dict[str, float]) -> float | None:
    """-log10 of a column's size-aware p-value (KS for a numeric column, chi-square for a categorical one);
    None when the column has none."""
    p_value = scores.get("ks_p", scores.get("chi2_p"))
    if not _known(p_value):
        return None
    return -math.log10(max(p_value, 1e-300))


class PolicyState(BaseModel):
    """Everything the policy remembers between windows, as stored in Redis between processes."""

    episode_active: bool = False
    retrained_in_episode: bool = False
    last_retrain: float | None = None
    retrains: list[float] = []
    readings: dict[str, tuple[float, Threshold]] = {}
    # The drift.detected event (JSON) that announced the episode in progress: a retrain continues its chain.
    episode_event: str | None = None


class TriggerPolicy:
    """Hysteresis over the monitor's tests plus the retrain guards; plain synchronous state, no I/O.

    ``decide`` records the retrain itself when it returns ``retrain=True``: the caller is expected to
    request exactly one retrain per such decision, so the policy's view and the mesh's never diverge.
    ``state()`` and ``restore`` carry that memory across processes (the monitor keeps it in Redis).
    """

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self.episode_active = False
        self.retrained_in_episode = False
        self.last_retrain: float | None = None
        # Only the last max_per_hour retrain times can matter for the hourly cap, so the state is bounded.
        self._retrains: deque[float] = deque(maxlen=config.retrain.max_per_hour)
        # The last known score of every test ("psi:income", "performance:accuracy") with its threshold.
        # Firing needs fresh evidence, but clearing reads these: a window that lacks a score (too few
        # labels for accuracy, no drift window this time, NaN) is no evidence that the test calmed down.
        # Otherwise such a window would end the episode and the next fresh score would start a second
        # one, and a second retrain, for the same drift. Bounded by features x tests.
        self._readings: dict[str, tuple[float, Threshold]] = {}
        self.episode_event: str | None = None

    @classmethod
    def restore(cls, config: MonitorConfig, state: PolicyState) -> TriggerPolicy:
        policy = cls(config)
        policy.episode_active = state.episode_active
        policy.retrained_in_episode = state.retrained_in_episode
        policy.last_retrain = state.last_retrain
        policy._retrains.extend(state.retrains)
        policy._readings = dict(state.readings)
        policy.episode_event = state.episode_event
        return policy

    def state(self) -> PolicyState:
        return PolicyState(
            episode_active=self.episode_active,
            retrained_in_episode=self.retrained_in_episode,
            last_retrain=self.last_retrain,
            retrains=list(self._retrains),
            readings=self._readings,
            episode_event=self.episode_event,
        )

    def new_champion(self) -> None:
        """A newly promoted model is judged against its own reference: whatever episode was open is over.

        Retrain history stays, so the cooldown and the hourly cap still hold across the change.
        """
        self.episode_active = False
        self.retrained_in_episode = False
        self._readings.clear()
        self.episode_event = None

    def _drift_scores(self, signals: WindowSignals) -> list[tuple[str, str, float, Threshold]]:
        drift = self.config.drift
        inputs = {"psi": drift.psi, "ks": drift.ks}
        outputs = {"psi": drift.outputs.psi, "ks": drift.outputs.ks} if drift.outputs else None
        known: list[tuple[str, str, float, Threshold]] = []
        for feature, scores in sorted(signals.drift.items()):
            thresholds = outputs if feature == OUTPUT_DRIFT else inputs
            if thresholds is None:
                continue
            for method in DRIFT_METHODS:
                score = scores.get(method)
                if _known(score):
                    known.append((feature, method, score, thresholds[method]))
            if feature != OUTPUT_DRIFT and drift.significance is not None:
                significance = significance_score(scores)
                if significance is not None:
                    known.append((feature, SIGNIFICANCE, significance, drift.significance))
        return known

    def decide(self, signals: WindowSignals, now: float) -> Decision:
        drift = self._drift_scores(signals)
        perf_limit = self.config.performance.max_drop
        perf_name = f"{PERFORMANCE_TEST}:{self.config.performance.metric}"
        drop = signals.performance_drop if _known(signals.performance_drop) else None
        for feature, method, score, limit in drift:
            self._readings[f"{method}:{feature}"] = (score, limit)
        if drop is not None:
            self._readings[perf_name] = (drop, perf_limit)

        firing = [
            (feature, method, score, limit) for feature, method, score, limit in drift if score >= limit.fire
        ]
        fired = [f"{method}:{feature}" for feature, method, _, _ in firing]
        reasons = [
            f"{method}:{feature} {score:.3f} >= {limit.fire}" for feature, method, score, limit in firing
        ]
        firing_features = {feature for feature, _, _, _ in firing}
        perf_fired = drop is not None and drop >= perf_limit.fire
        if perf_fired:
            fired.append(perf_name)
            reasons.append(f"{perf_name} dropped {drop:.3f} >= {perf_limit.fire}")

        starts = len(firing_features) >= self.config.drift.min_features or perf_fired
        episode_started = starts and not self.episode_active
        if episode_started:
            self.episode_active = True
            self.retrained_in_episode = False
            reasons.append("drift episode started")
        elif self.episode_active:
            holding = sorted(name for name, (score, limit) in self._readings.items() if score >= limit.clear)
            if not holding:
                self.episode_active = False
                reasons.append("drift episode cleared: every score below its clear threshold")
                return Decision(False, False, False, fired, reasons)
            if not fired:
                reasons.append(f"episode continues: {', '.join(holding)} not yet below clear")
        elif fired:
            # Fewer firing features than min_features: visible, but not an episode.
            reasons.append(
                f"{len(firing_features)} feature(s) fired, an episode needs {self.config.drift.min_features}"
            )

        if not self.episode_active:
            if not fired:
                reasons.append("no test above its fire threshold")
            return Decision(False, False, False, fired, reasons)

        holds = self._holds(signals, now)
        if holds:
            return Decision(False, episode_started, True, fired, reasons + holds)
        self.retrained_in_episode = True
        self.last_retrain = now
        self._retrains.append(now)
        reasons.append("retrain: drift episode active and every guard passed")
        return Decision(True, episode_started, True, fired, reasons)

    def _holds(self, signals: WindowSignals, now: float) -> list[str]:
        """Why an active episode must not retrain now (empty: it may)."""
        guard = self.config.retrain
        holds: list[str] = []
        if self.retrained_in_episode:
            # One episode, one retrain: the other guards are moot, and repeating them would mislead.
            return ["already retrained in this drift episode"]
        if signals.labelled_rows < guard.min_labelled_rows:
            holds.append(f"need {guard.min_labelled_rows} labelled rows, have {signals.labelled_rows}")
        if self.last_retrain is not None and (left := guard.cooldown_s - (now - self.last_retrain)) > 0:
            holds.append(f"cooldown: {math.ceil(left)} s left")
        recent = sum(1 for t in self._retrains if now - t < HOUR_S)
        if recent >= guard.max_per_hour:
            holds.append(f"retrains this hour at the cap of {guard.max_per_hour}")
        return holds
