"""What the monitor's consumers, routes and window ticker are handed."""

from __future__ import annotations

import dataclasses

from services.monitor.models import MonitoredModels
from services.monitor.references import References
from services.monitor.state import MonitorStore
from shared.runtime.service import ServiceDeps


@dataclasses.dataclass(frozen=True)
class MonitorDeps(ServiceDeps):
    """Besides settings, bus, tracer and logger: the models watched (from their monitor configs), their
    state in Redis, and their references (read from MLflow once per process)."""

    models: MonitoredModels
    store: MonitorStore
    references: References
