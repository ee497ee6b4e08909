"""Prometheus metrics of pipeline health, shared by every stage of one process."""

from __future__ import annotations

from collections import Counter as Tally
from typing import TYPE_CHECKING

import orjson
from prometheus_client import Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from pipeline.processor import Outcome

EVENTS_STORED = Counter("xp_events_stored_total", "Valid events stored")
EVENTS_DUPLICATE = Counter("xp_events_duplicate_total", "Events dropped as duplicates")
EVENTS_REJECTED = Counter("xp_events_rejected_total", "Rejected events", ["reason"])
EVENTS_REPLAYED = Counter(
    "xp_events_replayed_total", "Redelivered events that changed nothing (already applied)"
)
SINK_ERRORS = Counter("xp_sink_errors_total", "Failed ClickHouse writes (retried)")
SINK_FAILING = Gauge(
    "xp_sink_failing", "1 while ClickHouse writes fail and the worker retries with backoff"
)
SINK_SECONDS = Histogram("xp_sink_write_seconds", "ClickHouse write latency per batch")
SINK_ROWS = Histogram(
    "xp_sink_batch_rows",
    "Rows per ClickHouse write",
    buckets=(10, 100, 500, 1_000, 2_000, 5_000, 10_000, 50_000),
)

# The worker's watchdog (pipeline/worker.py): work waiting, and how long since any was done.
BATCHES_WAITING = Gauge(
    "xp_agent_batches_waiting", "Batches on this worker's partitions not applied yet"
)
PROGRESS_AGE = Gauge(
    "xp_agent_progress_age_seconds",
    "Seconds since this worker last applied a batch while batches wait (0 when idle)",
)


# Inputs of the Prometheus experience rules (deploy/prometheus/rules.yml): plain
# counters, so that Prometheus can compute ratios over any range and offset.
EVENTS_IN = Counter("xp_events_in_total", "Accepted events", ["source", "type"])
EVENTS_LATE = Counter(
    "xp_events_late_total",
    "Accepted events over a minute behind their partition's watermark (they restate a window)",
)
STAGE_ENTRIES = Counter(
    "xp_stage_entries_total", "Identities entering a stage", ["channel", "stage"]
)
CSAT_RESPONSES = Counter("xp_csat_responses_total", "CSAT responses", ["channel"])
CSAT_SATISFIED = Counter("xp_csat_satisfied_total", "CSAT responses of 4 or 5", ["channel"])

# Consumer progress per group, topic and partition (pipeline/health.py samples them).
_PARTITION = ["group", "topic", "partition"]
CONSUMER_LAG = Gauge("xp_consumer_lag", "Messages on the topic not yet committed", _PARTITION)
COMMITTED_OFFSET = Gauge("xp_consumer_committed_offset", "Committed offset", _PARTITION)
COMMIT_AGE = Gauge(
    "xp_consumer_commit_age_seconds", "Seconds since the committed offset last moved", _PARTITION
)

# The drop detector (pipeline/alerting.py): the latest period of every series it tests.
_SERIES = ["metric", "channel", "stage"]
EXPERIENCE_VALUE = Gauge("xp_experience_value", "Recent period's value", _SERIES)
EXPERIENCE_BASELINE = Gauge("xp_experience_baseline", "Baseline value", _SERIES)
EXPERIENCE_UNITS = Gauge("xp_experience_units", "Units (responses, entries) behind it", _SERIES)
ALERT_ACTIVE = Gauge(
    "xp_experience_alert_active", "1 while a drop alert fires", [*_SERIES, "severity", "segment"]
)
ALERT_TRANSITIONS = Counter("xp_experience_alerts_total", "Alert records written", ["status"])
ALERT_EVENT_TIME = Gauge(
    "xp_alert_evaluated_event_time_seconds", "End (event time) of the last evaluated period"
)

#: Newest event time seen per partition, for telling late events from on-time ones.
_latest_ms: dict[int, int] = {}
_LATE_MS = 60_000
_CSAT_SATISFIED_SCORE = 4


def _record_events(outcome: Outcome) -> None:
    """Experience counters from the rows of one batch (one partition, processing order)."""
    rows = outcome.rows
    for (source, etype), n in Tally((row[1], row[2]) for row in rows.events).items():
        EVENTS_IN.labels(source, etype).inc(n)
        if etype == "csat_submitted":
            CSAT_RESPONSES.labels(source).inc(n)
    for row in rows.events:
        if row[2] == "csat_submitted" and orjson.loads(row[10])["score"] >= _CSAT_SATISFIED_SCORE:
            CSAT_SATISFIED.labels(row[1]).inc()
    for (stage, channel), n in Tally((row[1], row[2]) for row in rows.stage_entries).items():
        STAGE_ENTRIES.labels(channel, stage).inc(n)
    if rows.events:
        partition = rows.events[0][13]
        latest = _latest_ms.get(partition)
        if latest is not None:
            EVENTS_LATE.inc(sum(1 for row in rows.events if row[3] < latest - _LATE_MS))
        newest = max(row[3] for row in rows.events)
        _latest_ms[partition] = newest if latest is None else max(latest, newest)


def record_outcome(outcome: Outcome) -> None:
    _record_events(outcome)
    EVENTS_STORED.inc(outcome.accepted)
    EVENTS_DUPLICATE.inc(outcome.duplicates)
    EVENTS_REPLAYED.inc(outcome.skipped)
    for row in outcome.rows.rejected:
        EVENTS_REJECTED.labels(reason=row[1]).inc()


def serve_metrics(port: int) -> None:
    """Expose /metrics on `port` (0 disables it)."""
    if port:
        start_http_server(port)
