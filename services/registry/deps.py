"""What the registry's consumers and routes are handed."""

from __future__ import annotations

import dataclasses

from mlflow.tracking import MlflowClient

from shared.bus import PermanentError
from shared.ml.modeling import ModelConfig, valid_model_configs
from shared.runtime.service import ServiceDeps


@dataclasses.dataclass(frozen=True)
class RegistryDeps(ServiceDeps):
    """Settings, bus, tracer and logger, plus the MLflow client the registry reads runs and moves
    aliases with."""

    mlflow: MlflowClient

    def config_for(self, model_name: str) -> ModelConfig:
        """The configuration (task, gate) of ``model_name``, read when asked so that an edited config
        applies to the next candidate. A model without a valid config can never be gated: no retry would
        help, and the reason names the file and field."""
        configs, problems = valid_model_configs(self.settings.config_dir)
        for config in configs:
            if config.model_name == model_name:
                return config
        known = f"; refused files: {'; '.join(str(p) for p in problems)}" if problems else ""
        raise PermanentError(
            f"model {model_name!r} has no valid config under {self.settings.config_dir / 'models'}{known}"
        )
