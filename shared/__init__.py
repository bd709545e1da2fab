"""retrain-mesh's own package: event contracts, settings, logging, telemetry and bus helpers."""
