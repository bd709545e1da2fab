"""What the registry's consumers and routes are handed."""

from __future__ import annotations

import dataclasses

from mlflow.tracking import MlflowClient

from shared.bus import PermanentError
from shared.ml.modeling import GateConfig, model_configs
from shared.runtime.service import ServiceDeps


@dataclasses.dataclass(frozen=True)
class RegistryDeps(ServiceDeps):
    """Settings, bus, tracer and logger, plus the MLflow client the registry reads runs and moves
    aliases with."""

    mlflow: MlflowClient

    def gate_for(self, model_name: str) -> GateConfig:
        """The gate configured for ``model_name``, read when asked so that an edited config applies to the
        next candidate. A model without a config can never be gated: no retry would help."""
        for config in model_configs(self.settings.config_dir):
            if config.model_name == model_name:
                return config.gate
        raise PermanentError(
            f"model {model_name!r} has no config under {self.settings.config_dir / 'models'}"
        )
