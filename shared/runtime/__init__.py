"""The service runtime: settings, logging, telemetry, the HTTP face, MLflow access, waiting."""
