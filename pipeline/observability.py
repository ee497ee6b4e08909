"""Prometheus metrics of pipeline health, shared by every stage of one process."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram, start_http_server

if TYPE_CHECKING:
    from pipeline.processor import Outcome

EVENTS_STORED = Counter("xp_events_stored_total", "Valid events stored")
EVENTS_DUPLICATE = Counter("xp_events_duplicate_total", "Events dropped as duplicates")
EVENTS_REJECTED = Counter("xp_events_rejected_total", "Rejected events", ["reason"])
EVENTS_REPLAYED = Counter(
    "xp_events_replayed_total", "Redelivered events that changed nothing (already applied)"
)
SINK_ERRORS = Counter("xp_sink_errors_total", "Failed ClickHouse writes (retried)")
SINK_SECONDS = Histogram("xp_sink_write_seconds", "ClickHouse write latency per batch")
SINK_ROWS = Histogram(
    "xp_sink_batch_rows",
    "Rows per ClickHouse write",
    buckets=(10, 100, 500, 1_000, 2_000, 5_000, 10_000, 50_000),
)


def record_outcome(outcome: Outcome) -> None:
    EVENTS_STORED.inc(outcome.accepted)
    EVENTS_DUPLICATE.inc(outcome.duplicates)
    EVENTS_REPLAYED.inc(outcome.skipped)
    for row in outcome.rows.rejected:
        EVENTS_REJECTED.labels(reason=row[1]).inc()


def serve_metrics(port: int) -> None:
    """Expose /metrics on `port` (0 disables it)."""
    if port:
        start_http_server(port)
