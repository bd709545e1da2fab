"""ML domain code: dataset schemas, snapshots, feature specs and sets, model configuration."""
