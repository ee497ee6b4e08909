"""All configuration of xp, read from `XP_` environment variables in one place."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: 30 days: a customer back after a month of silence starts a new journey.
DEFAULT_JOURNEY_TTL_S = 30 * 86_400


class Settings(BaseSettings):
    """One frozen settings object, so every component sees the same values.

    `kafka_bootstrap` and `clickhouse_url` left unset mean the embedded stack:
    the bundled broker on a free loopback port and chDB under `data_dir`.
    """

    model_config = SettingsConfigDict(env_prefix="XP_", frozen=True)

    data_dir: Path = Path(".xp-data")
    kafka_bootstrap: str | None = None
    clickhouse_url: str | None = None

    touchpoints_topic: str = "touchpoints"
    batches_topic: str = "xp-batches"
    rejected_topic: str = "xp-rejected"
    partitions: int = Field(default=4, ge=1)
    app_id: str = "xp-worker"

    max_event_bytes: int = Field(default=65_536, ge=1024)
    max_clock_skew_s: int = Field(default=300, ge=0)
    allowed_lateness_s: int = Field(default=3_600, ge=0)
    session_gap_s: int = Field(default=1_800, ge=1)
    #: An identity inactive for longer (in event time) starts a new journey, and its state is
    #: dropped: what bounds a worker's memory (docs/semantics.md §4, "Expiry").
    journey_ttl_s: int = Field(default=DEFAULT_JOURNEY_TTL_S, ge=1)

    batch_max_events: int = Field(default=20_000, ge=1)
    batch_linger_ms: int = Field(default=250, ge=0)
    snapshot_every_batches: int = Field(default=200, ge=1)
    #: Deltas are kept in memory (and replayed on restore) until a snapshot covers them.
    snapshot_delta_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    #: How long the broker may hold a fetch: the floor of every hop's latency.
    fetch_max_wait_ms: int = Field(default=50, ge=1)
    bulk_processes: int = Field(default=1, ge=1)
    #: Batches applied while earlier ones are still being stored (pipeline/worker.py).
    batches_in_flight: int = Field(default=3, ge=1)
    #: How often Faust commits the offsets of stored batches (its default): what a restart
    #: redoes at most, besides the batches in flight.
    commit_interval_s: float = Field(default=2.8, gt=0)
    #: A worker that applied nothing for this long while batches wait exits (pipeline/worker.py).
    watchdog_s: float = Field(default=180.0, gt=0)
    #: While this file exists ClickHouse writes fail: outage drills (pipeline/faults.py).
    sink_fault_file: Path | None = None

    # The HTTP collector (`xp collect`, `xp serve`); docs/collector.md explains each limit.
    collector_keys: SecretStr | None = None
    collector_keys_file: Path | None = None
    collector_max_body_bytes: int = Field(default=1_000_000, ge=1_024)
    collector_max_events: int = Field(default=1_000, ge=1)
    collector_rate_per_key: float = Field(default=10_000.0, gt=0)
    collector_burst: int = Field(default=20_000, ge=1)
    collector_cors_origins: str = ""
    collector_timeout_s: float = Field(default=5.0, gt=0)
    collector_max_pending: int = Field(default=100_000, ge=1)

    # Drop alerts (pipeline/alerting.py), all in event time: a recent period
    # against a trailing baseline, judged once every partition's data passed
    # the period's end by the settle time.
    alerts_topic: str = "xp-alerts"
    alert_period_s: int = Field(default=900, ge=60, multiple_of=60)
    alert_baseline_s: int = Field(default=7_200, ge=600, multiple_of=60)
    alert_settle_s: int = Field(default=120, ge=0, multiple_of=60)
    alert_false_alarm_rate: float = Field(default=0.001, gt=0, lt=1)

    log_level: str = "INFO"

    @model_validator(mode="after")
    def _ttl_outlives_lateness(self) -> Settings:
        """Any event still accepted is then newer than the expiry cutoff, never born expired."""
        if self.journey_ttl_s < self.allowed_lateness_s + 60:
            raise ValueError(
                f"journey_ttl_s ({self.journey_ttl_s}) must be at least "
                f"allowed_lateness_s + 60 ({self.allowed_lateness_s + 60})"
            )
        return self
