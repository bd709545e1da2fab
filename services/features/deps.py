"""What the features service's consumers are handed."""

from __future__ import annotations

import dataclasses

from shared.runtime.service import ServiceDeps


@dataclasses.dataclass(frozen=True)
class FeaturesDeps(ServiceDeps):
    """Settings, bus, tracer and logger: features reads config and snapshots from paths in the settings."""
