"""One settings object for every service and tool, read from ``MESH_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]

SERVICE_NAMES = ("ingest", "features", "training", "registry", "serving", "monitor")


class MeshSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MESH_", extra="ignore")

    # Where things are. Unset URLs mean "the embedded server on loopback at its port".
    redis_url: str | None = Field(default=None, description="any Redis >= 7; unset: embedded valkey-server")
    redis_port: int = 6390
    mlflow_tracking_uri: str | None = None
    mlflow_port: int = 5050
    state_dir: Path = Path(".mesh")
    data_root: Path | None = None
    config_dir: Path = REPO_ROOT / "deploy" / "config"

    # HTTP ports, one per service (each service also serves /healthz, /readyz and /metrics).
    host: str = "127.0.0.1"
    ingest_port: int = 8101
    features_port: int = 8102
    training_port: int = 8103
    registry_port: int = 8104
    serving_port: int = 3000
    monitor_port: int = 8106

    # Observability.
    log_level: str = "INFO"
    otel_exporter: str = Field(
        default="none", description="comma-separated: none, otlp, mlflow (its /v1/traces), file, console"
    )
    trace_experiment: str = "mesh-traces"
    trace_request_sample_ratio: float = Field(
        default=1.0, ge=0.0, le=1.0, description="share of incoming requests traced (event chains: all)"
    )
    otlp_endpoint: str | None = None
    trace_file: Path | None = None

    # Bus behaviour.
    stream_maxlen: int = Field(
        default=100_000, ge=100, description="entries kept per stream, never trimmed past its slowest group"
    )
    # Retention and housekeeping run once per bus_retention_interval_s in every started bus (see
    # shared/bus/housekeeping.py): a stream may exceed its cap by what is published within one interval.
    bus_retention_interval_s: float = Field(
        default=5.0, gt=0, description="trim streams, remove dead consumers and stale errors this often"
    )
    bus_stream_hard_maxlen: int | None = Field(
        default=None,
        ge=100,
        description="safety valve, off when unset: trim to this even past a lagging group (its entries lost)",
    )
    # Must exceed bus_block_ms (a live consumer touches its group at least once per blocking read) and
    # bus_reclaim_idle_ms (a dead consumer's pending entries are reclaimed by then): a bus refuses otherwise.
    bus_dead_consumer_after_s: float = Field(
        default=300.0, gt=0, description="remove a consumer idle this long that holds no pending entries"
    )
    # An idle consumer makes one blocking read per bus_block_ms and one sweep per bus_reclaim_interval_ms
    # per stream: 0.2 calls/s at these defaults. A blocking read returns as soon as an entry arrives and
    # is cancelled at once on stop, so a long block adds no latency; the sweep only matters for entries
    # pending longer than bus_reclaim_idle_ms anyway.
    bus_block_ms: int = Field(default=10_000, ge=10, description="XREADGROUP BLOCK; bounds idle polling")
    bus_reclaim_idle_ms: int = Field(default=30_000, ge=100, description="pending this long => reclaimable")
    bus_reclaim_interval_ms: int = Field(
        default=10_000, ge=50, description="XAUTOCLAIM sweep period when idle"
    )
    bus_max_attempts: int = Field(default=5, ge=1)
    bus_read_ahead: int = Field(
        default=200, ge=1, description="most entries read at once: draining malformed ones, or a backlog"
    )
    bus_read_ahead_wait_ms: int = Field(
        default=50,
        ge=0,
        description="read more entries at once behind fast handlers, as many as they handle in this long "
        "(0: one entry per read, as for slow handlers)",
    )
    bus_supervise_interval_s: float = Field(default=2.0, gt=0)
    bus_graceful_timeout_s: float = Field(
        default=30.0, gt=0, description="on stop, wait this long for handlers"
    )
    idempotency_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    startup_timeout_s: float = Field(default=30.0, gt=0)

    # Registry commands (promote/rollback) need this bearer token; unset disables them.
    registry_token: str | None = None
    # Uploads, labels and predictions need this bearer token when set (shared/runtime/auth.py); unset: open,
    # for a mesh on a trusted network (compose binds every port to 127.0.0.1).
    api_token: str | None = None

    # Serving.
    serving_workers: int = Field(default=1, ge=1)
    serving_sample_rate: float = Field(default=1.0, ge=0.0, le=1.0, description="share of predictions sent")
    serving_reconcile_s: float = Field(default=30.0, gt=0, description="check the champion alias this often")
    serving_batch_max_records: int = Field(
        default=64, ge=1, description="single-record predictions scored together at most; 1: no batching"
    )
    serving_max_loaded_models: int = Field(
        default=8, ge=1, description="models held in memory per worker; the least recently used unloads"
    )

    # Data retention (shared/ml/retention.py), off when unset: snapshots, feature sets and traces older than
    # this are pruned, never what a registered version references or a training window takes.
    retention_days: float | None = Field(default=None, gt=0, description="prune data older than this")
    retention_interval_s: float = Field(default=3600.0, gt=0, description="prune this often (one replica)")

    # Limits.
    max_upload_bytes: int = Field(default=64 * 1024 * 1024, ge=1)

    @property
    def otel_exporters(self) -> list[str]:
        kinds = [k.strip() for k in self.otel_exporter.split(",") if k.strip() and k.strip() != "none"]
        unknown = set(kinds) - {"otlp", "mlflow", "file", "console"}
        if unknown:
            raise ValueError(f"MESH_OTEL_EXPORTER: unknown exporter(s) {sorted(unknown)}")
        return kinds

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def effective_mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def effective_data_root(self) -> Path:
        return self.data_root or self.state_dir / "data"

    def port_for(self, service: str) -> int:
        if service not in SERVICE_NAMES:
            raise ValueError(f"unknown service {service!r}; known: {', '.join(SERVICE_NAMES)}")
        port: int = getattr(self, f"{service}_port")
        return port
