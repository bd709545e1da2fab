"""What the drift monitor of one model is configured with: ``<config_dir>/monitor/<dataset>.yaml``.

Read by the monitor service (services/monitor/policy.py decides with it) and by ``mesh dataset check``,
which validates the four files of a dataset together.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.ml.config_files import read_config


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Threshold(_Config):
    """A test fires at ``score >= fire`` and clears at ``score < clear`` (hysteresis band in between)."""

    fire: float = Field(ge=0)
    clear: float = Field(ge=0)

    @model_validator(mode="after")
    def _clear_below_fire(self) -> Threshold:
        if self.clear > self.fire:
            raise ValueError(f"clear ({self.clear}) must be <= fire ({self.fire})")
        return self


class WindowConfig(_Config):
    size: int = Field(default=500, ge=1, description="rows per window")
    min_size: int = Field(default=200, ge=1, description="fewest rows a window closed by time is scored on")
    max_seconds: float = Field(default=120, gt=0, description="a window closes after this even if not full")

    def rows_to_close(self, rows: int, age_s: float, *, by_clock: bool) -> int:
        """How many of an open window's ``rows`` an evaluation takes: ``size`` once it is full; all of them
        when ``by_clock`` and it has ``min_size`` rows and is ``max_seconds`` old; else none. Never because
        labels came, so a window's rows do not depend on when the ground truth happened to arrive."""
        if rows >= self.size:
            return self.size
        if by_clock and rows >= self.min_size and age_s >= self.max_seconds:
            return rows
        return 0

    @model_validator(mode="after")
    def _min_within_size(self) -> WindowConfig:
        if self.min_size > self.size:
            raise ValueError(f"min_size ({self.min_size}) must be <= size ({self.size})")
        return self


# The drift of what the model says is scored beside its inputs' under this name (not a column's: a
# dataset may have a column called "prediction").
OUTPUT_DRIFT = "@prediction"


class OutputDriftConfig(_Config):
    """Thresholds of the drift of the model's outputs: the positive class's probability (binary), the
    predicted class (multiclass) or the predicted value (regression) against the same on its holdout."""

    psi: Threshold
    ks: Threshold


class DriftConfig(_Config):
    psi: Threshold
    ks: Threshold
    # The size-aware test: -log10 of the p-value of KS (numeric columns, against the rows the reference
    # stands for) or chi-square (categorical). Fixed PSI/KS thresholds are calibrated for one window size
    # and miss small shifts in large windows; a p-value sees any shift a window is large enough to show.
    # Unset: scored in the report, never fires.
    significance: Threshold | None = None
    min_features: int = Field(default=1, ge=1, description="features with a firing drift test to start")
    # Without thresholds, the drift of outputs is scored and shown, and never starts an episode.
    outputs: OutputDriftConfig | None = None


class PerformanceConfig(_Config):
    metric: str | None = Field(
        default=None, description="a live metric of the model's task (default: accuracy, macro_f1 or rmse)"
    )
    # On the drop: how much worse the metric is on the window's labelled rows than at promotion (for rmse,
    # the rise; for accuracy, the fall), in the metric's own units.
    max_drop: Threshold
    min_labels: int = Field(default=200, ge=1, description="labelled rows a window needs to be scored")


class RetrainConfig(_Config):
    cooldown_s: float = Field(default=600, ge=0)
    max_per_hour: int = Field(default=2, ge=1)
    min_labelled_rows: int = Field(default=300, ge=0)
    window_snapshots: int = Field(default=1, ge=1, description="snapshots of new labelled rows to train on")


class MonitorConfig(_Config):
    dataset: str
    model_name: str
    window: WindowConfig = WindowConfig()
    drift: DriftConfig
    performance: PerformanceConfig
    retrain: RetrainConfig = RetrainConfig()
    join_capacity: int = Field(default=20_000, ge=1, description="predictions kept waiting for labels")


def load_monitor_config(config_dir: Path, dataset: str) -> MonitorConfig:
    path = config_dir / "monitor" / f"{dataset}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no monitor config for dataset {dataset!r} at {path}")
    config = read_config(path, MonitorConfig)
    if config.dataset != dataset:
        raise ValueError(f"{path} configures dataset {config.dataset!r}, expected {dataset!r}")
    return config
