"""All configuration of xp, read from `XP_` environment variables in one place."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    batch_max_events: int = Field(default=2_000, ge=1)
    batch_max_bytes: int = Field(default=4_000_000, ge=65_536)
    batch_linger_ms: int = Field(default=100, ge=0)
    snapshot_every_batches: int = Field(default=200, ge=1)

    log_level: str = "INFO"
