"""The registry's Prometheus counters (exposed on ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter

PROMOTIONS = Counter("mesh_promotions_total", "Champion moves", ["model", "action"])
REJECTIONS = Counter("mesh_rejections_total", "Candidates the gate rejected", ["model"])
