"""retrain-mesh's own package: ``events`` (streams and contracts), ``bus``, ``runtime``, ``ml``, ``ops``."""
