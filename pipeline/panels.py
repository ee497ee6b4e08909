"""Every query people read xp through, defined once: Grafana panels, `xp report`, `xp demo`.

The SQL is written for the Grafana ClickHouse plugin, with its macros
(`$__timeFilter(col)`, `$__timeInterval(col)`, `$__fromTime`, `$__toTime`)
and dashboard variables (`${channel:singlequote}`). Grafana expands them in
the plugin; :func:`expand` expands them the same way for the report, the demo
summary and the tests, so a number in a report is the number the dashboard
shows for that time range, and a panel that breaks breaks a test first.

Queries read only the public views of docs/relations.md. Ratios divide by
`nullIf(denominator, 0)`: an empty period is NULL ("no data"), never an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Literal, get_args

from pipeline.journey import ENTERED_BY, NPS_ADVOCATE, STAGES
from pipeline.validate import REASONS
from schemas.events import Source, WebVitalName

#: How long an identity must have been quiet to count as dropped off (metrics.md).
DROP_OFF_INACTIVITY_S = 1800

CHANNELS: tuple[str, ...] = get_args(Source)
JOURNEY: tuple[str, ...] = STAGES[1:]
VITAL_NAMES: tuple[str, ...] = tuple(name.lower() for name in get_args(WebVitalName))

PanelKind = Literal["timeseries", "table", "barchart", "stat"]


@dataclass(frozen=True)
class Variable:
    """A dashboard variable: fixed `values`, or the values `sql` returns for the time range.

    Channels and stages are closed sets of the contract, so they are listed
    rather than queried; segment dimensions are whatever `context` keys the
    producers send, so they come from the data.
    """

    name: str
    label: str
    values: tuple[str, ...] = ()
    sql: str = ""
    multi: bool = True


@dataclass(frozen=True)
class Panel:
    """One Grafana panel and its query.

    `source` and `time_column` name the relation the panel summarises: when
    that relation has rows in the time range, the panel must show some.
    Time series return a `time` column and one column per line.
    """

    key: str
    title: str
    description: str
    kind: PanelKind
    sql: str
    source: str
    time_column: str
    unit: str = "short"
    min_interval_s: int = 60
    width: int = 12
    height: int = 8
    right_axis: tuple[str, ...] = ()


@dataclass(frozen=True)
class MetricPanel:
    """A panel on the workers' Prometheus metrics: pipeline health that ClickHouse cannot see."""

    key: str
    title: str
    description: str
    queries: tuple[tuple[str, str], ...]  # (legend, PromQL)
    unit: str = "short"
    width: int = 12
    height: int = 8


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel | MetricPanel, ...]


@dataclass(frozen=True)
class TimeRange:
    """A closed range of whole seconds, as the plugin's macros see a dashboard's range."""

    start: datetime
    end: datetime

    @classmethod
    def everything(cls) -> TimeRange:
        """Every time a ClickHouse `DateTime` can hold: the demo summary's "all data"."""
        return cls(datetime(1970, 1, 1, tzinfo=UTC), datetime(2106, 2, 7, 6, 28, 15, tzinfo=UTC))

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def _quoted(values: Sequence[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


_STAGE_ARRAY = f"[{_quoted(STAGES)}]"
_JOURNEY_ARRAY = f"[{_quoted(JOURNEY)}]"
_ENTERING_TYPES = _quoted(sorted(set().union(*ENTERED_BY.values())))
_CHANNEL = "channel IN (${channel:singlequote})"
_SOURCE = "source IN (${channel:singlequote})"
_STAGE = "stage IN (${stage:singlequote})"
#: The minute rows of the dashboard's time range, channels and stages.
_SELECTED = f"$__timeFilter(window_start) AND {_CHANNEL} AND {_STAGE}"
_BY_CHANNEL_AND_STAGE = f"ORDER BY channel, indexOf({_STAGE_ARRAY}, stage)"


def _ratio(numerator: str, denominator: str, scale: int, digits: int) -> str:
    if " + " in numerator or " - " in numerator:
        numerator = f"({numerator})"
    scaled = numerator if scale == 1 else f"{scale} * {numerator}"
    return f"round({scaled} / nullIf({denominator}, 0), {digits})"


def _mean_minutes(milliseconds: str, count: str) -> str:
    return f"round({milliseconds} / nullIf({count}, 0) / 60000, 1)"


def _nps(promoters: str, detractors: str, responses: str) -> str:
    return _ratio(f"toInt64({promoters}) - toInt64({detractors})", responses, 100, 1)


def _time_series(
    key: str,
    title: str,
    description: str,
    columns: str,
    source: str,
    time_column: str,
    where: str = "",
    having: str = "",
    **options: Any,
) -> Panel:
    """A time series panel: `columns` per period of `time_column`, in the selected range.

    `having` drops periods without the responses a ratio needs, so a line
    shows a gap rather than a misleading zero.
    """
    condition = f" AND {where}" if where else ""
    keep = f"HAVING {having}\n" if having else ""
    sql = f"""
SELECT
    $__timeInterval({time_column}) AS time,
    {columns}
FROM {source}
WHERE $__timeFilter({time_column}){condition}
GROUP BY time
{keep}ORDER BY time
"""
    return Panel(key, title, description, "timeseries", sql, source, time_column, **options)


# --- variables ----------------------------------------------------------------

VARIABLES: tuple[Variable, ...] = (
    Variable("channel", "Channel", values=CHANNELS),
    Variable("stage", "Stage", values=STAGES),
    Variable(
        "segment",
        "Segment",
        sql="""
SELECT DISTINCT arrayJoin(mapKeys(context)) AS segment
FROM xp.events
WHERE $__timeFilter(occurred_at)
ORDER BY segment
""",
        multi=False,
    ),
    Variable(
        "segment_value",
        "Value",
        sql="""
SELECT DISTINCT context[${segment:singlequote}] AS value
FROM xp.events
WHERE $__timeFilter(occurred_at) AND mapContains(context, ${segment:singlequote})
ORDER BY value
""",
    ),
)

# --- journey ------------------------------------------------------------------

FUNNEL = Panel(
    "funnel",
    "Journey funnel by channel",
    "Identities entering each stage for the first time, by the channel of the entering "
    "event. Each identity enters a stage once, so the channels add up.",
    "barchart",
    f"""
SELECT stage, channel, sum(entries) AS entries, sum(conversions) AS conversions
FROM xp.stage_minute
WHERE {_SELECTED}
  AND has({_JOURNEY_ARRAY}, stage)
GROUP BY stage, channel
ORDER BY indexOf({_STAGE_ARRAY}, stage), channel
""",
    "xp.stage_minute",
    "window_start",
)

_STEPS = ",\n    ".join(
    _ratio(f"sumIf(entries, stage = '{stage}')", f"sumIf(entries, stage = '{before}')", 100, 1)
    + f" AS `{before} → {stage}`"
    for before, stage in pairwise(JOURNEY)
)
STAGE_CONVERSION = _time_series(
    "stage_conversion",
    "Stage conversion",
    "Entries of a stage over entries of the stage before, in the same period (%). "
    "Periods of at least 5 minutes: single minutes are too few people to read.",
    _STEPS,
    "xp.stage_minute",
    "window_start",
    where=_CHANNEL,
    unit="percent",
    min_interval_s=300,
)

_MEDIANS = ",\n    ".join(
    f"quantileExactIf(0.5)(seconds_to_convert, stage = '{stage}') AS {stage}"
    for stage in JOURNEY[1:]
)
TIME_TO_CONVERT_OVER_TIME = _time_series(
    "time_to_convert_over_time",
    "Median time to convert",
    "Median seconds from an identity's first awareness to entering each stage, by the "
    "period of the entry. Identities first seen after awareness have no time.",
    _MEDIANS,
    "xp.stage_entries",
    "entered_at",
    where=f"{_CHANNEL} AND {_STAGE} AND stage != 'awareness'",
    unit="s",
    min_interval_s=300,
)

# seconds_to_convert is NULL for identities first seen after awareness (a
# customer id that appears at login); quantiles skip them, `timed` counts the rest.
TIME_TO_CONVERT = Panel(
    "time_to_convert",
    "Time to convert",
    "Seconds from first awareness to entering the stage: median and p90 over the entries "
    "that have a time.",
    "table",
    f"""
SELECT
    stage,
    count() AS entries,
    count(seconds_to_convert) AS timed,
    quantileExact(0.5)(seconds_to_convert) AS median_s,
    quantileExact(0.9)(seconds_to_convert) AS p90_s
FROM xp.stage_entries
WHERE $__timeFilter(entered_at) AND {_CHANNEL} AND {_STAGE} AND stage != 'awareness'
GROUP BY stage
ORDER BY indexOf({_STAGE_ARRAY}, stage)
""",
    "xp.stage_entries",
    "entered_at",
)

# Per identity: the bit mask of stages reached, the furthest stage and the time
# of the last stage-entering event (experience signals and NPS scores below the
# advocate threshold enter no stage, so they do not count as activity). An
# identity dropped off at its furthest stage if it has been quiet for the
# inactivity limit before the latest event of the range, so that a replay of
# old data reads the same. Advocacy has no next stage.
DROP_OFF = Panel(
    "drop_off",
    "Drop-off",
    f"Identities quiet for {DROP_OFF_INACTIVITY_S // 60} minutes before the latest event of "
    "the range who never reached the next stage, per stage reached.",
    "table",
    f"""
WITH (SELECT max(occurred_at) FROM xp.events WHERE $__timeFilter(occurred_at)) AS latest
SELECT
    {_JOURNEY_ARRAY}[o] AS stage,
    countIf(bitTest(stage_mask, o)) AS reached,
    countIf(furthest = o
            AND last_entering < latest - INTERVAL {DROP_OFF_INACTIVITY_S} SECOND) AS dropped,
    round(100 * dropped / nullIf(reached, 0), 1) AS dropped_pct
FROM
(
    SELECT
        identity,
        groupBitOr(bitShiftLeft(toUInt8(1), o)) AS stage_mask,
        max(o) AS furthest,
        max(occurred_at) AS last_entering
    FROM
    (
        SELECT identity, occurred_at, indexOf({_JOURNEY_ARRAY}, toString(stage)) AS o
        FROM xp.events
        WHERE $__timeFilter(occurred_at) AND {_SOURCE}
          AND (type IN ({_ENTERING_TYPES})
               OR (type = 'nps_submitted'
                   AND JSONExtractInt(properties, 'score') >= {NPS_ADVOCATE}))
    )
    WHERE o > 0
    GROUP BY identity
)
ARRAY JOIN range(1, {len(JOURNEY)}) AS o
GROUP BY o
HAVING {_STAGE}
ORDER BY o
""",
    "xp.events",
    "occurred_at",
)

_SEGMENT_VALUE = "context[${segment:singlequote}]"
_CONVERTED_PCT = _ratio("uniqExactIf(identity, stage = 'conversion')", "identities", 100, 1)
_FAILURES_PER_1000 = _ratio("countIf(type IN ('error', 'crash'))", "events", 1000, 2)
_SATISFIED = "countIf(type = 'csat_submitted' AND JSONExtractInt(properties, 'score') >= 4)"
_CSAT_PCT = _ratio(_SATISFIED, "csat_responses", 100, 1)
SEGMENTS = Panel(
    "segments",
    "By segment",
    "The identities, conversion, errors and CSAT of each value of the chosen segment "
    "dimension (a context key such as country or app_version).",
    "table",
    f"""
SELECT
    {_SEGMENT_VALUE} AS value,
    uniqExact(identity) AS identities,
    {_CONVERTED_PCT} AS converted_pct,
    count() AS events,
    {_FAILURES_PER_1000} AS errors_per_1000,
    countIf(type = 'csat_submitted') AS csat_responses,
    {_CSAT_PCT} AS csat_pct
FROM xp.events
WHERE $__timeFilter(occurred_at) AND {_SOURCE}
  AND mapContains(context, ${{segment:singlequote}})
  AND {_SEGMENT_VALUE} IN (${{segment_value:singlequote}})
GROUP BY value
ORDER BY identities DESC, value
""",
    "xp.events",
    "occurred_at",
    width=24,
)

# --- experience ---------------------------------------------------------------

_CSAT_SERIES = _ratio("sum(csat_satisfied)", "sum(csat_responses)", 100, 1)
_NPS_SERIES = _nps("sum(nps_promoters)", "sum(nps_detractors)", "sum(nps_responses)")
_CES_SERIES = _ratio("sum(ces_sum)", "sum(ces_responses)", 1, 2)
SCORES_OVER_TIME = _time_series(
    "scores_over_time",
    "CSAT, NPS and CES",
    "CSAT: share of scores 4-5 (%). NPS: % promoters (9-10) minus % detractors (0-6). "
    "CES: mean effort score, 1-7, on the right axis.",
    f"{_CSAT_SERIES} AS CSAT,\n    {_NPS_SERIES} AS NPS,\n    {_CES_SERIES} AS CES",
    "xp.experience_minute",
    "window_start",
    where=f"{_CHANNEL} AND {_STAGE}",
    having="sum(csat_responses) + sum(nps_responses) + sum(ces_responses) > 0",
    min_interval_s=900,
    right_axis=("CES",),
)

SCORES = Panel(
    "scores",
    "Experience scores by channel",
    "CSAT (% of 4-5), NPS (promoters minus detractors) and CES (mean, 1-7) with the "
    "number of responses behind each.",
    "table",
    f"""
SELECT
    channel,
    csat_responses,
    {_ratio("csat_satisfied", "csat_responses", 100, 1)} AS csat_pct,
    nps_responses,
    {_nps("nps_promoters", "nps_detractors", "nps_responses")} AS nps,
    ces_responses,
    {_ratio("ces_sum", "ces_responses", 1, 2)} AS ces
FROM
(
    SELECT
        channel,
        sum(csat_responses) AS csat_responses,
        sum(csat_satisfied) AS csat_satisfied,
        sum(nps_responses) AS nps_responses,
        sum(nps_promoters) AS nps_promoters,
        sum(nps_detractors) AS nps_detractors,
        sum(ces_responses) AS ces_responses,
        sum(ces_sum) AS ces_sum
    FROM xp.experience_minute
    WHERE {_SELECTED}
    GROUP BY channel
)
WHERE csat_responses + nps_responses + ces_responses > 0
ORDER BY channel
""",
    "xp.experience_minute",
    "window_start",
)

_FIRST_RESPONSE_SERIES = _mean_minutes("sum(first_response_ms_sum)", "sum(first_responses)")
_RESOLUTION_SERIES = _mean_minutes("sum(resolution_ms_sum)", "sum(resolutions)")
SUPPORT_OVER_TIME = _time_series(
    "support_over_time",
    "Support response and resolution times",
    "Mean minutes from ticket opened to the first human reply, and to resolution, by the "
    "period of the reply or resolution.",
    f"{_FIRST_RESPONSE_SERIES} AS `first response`,\n    {_RESOLUTION_SERIES} AS resolution",
    "xp.experience_minute",
    "window_start",
    where=f"{_CHANNEL} AND {_STAGE}",
    having="sum(first_responses) + sum(resolutions) > 0",
    unit="m",
    min_interval_s=900,
)

SUPPORT = Panel(
    "support",
    "Support",
    "Mean first response and resolution time (minutes) over the tickets of the range, "
    "and reopened tickets per resolution.",
    "stat",
    f"""
SELECT
    first_responses,
    {_mean_minutes("first_response_ms_sum", "first_responses")} AS mean_first_response_min,
    resolutions,
    {_mean_minutes("resolution_ms_sum", "resolutions")} AS mean_resolution_min,
    reopens,
    {_ratio("reopens", "resolutions", 100, 1)} AS reopen_pct
FROM
(
    SELECT
        sum(first_responses) AS first_responses,
        sum(first_response_ms_sum) AS first_response_ms_sum,
        sum(resolutions) AS resolutions,
        sum(resolution_ms_sum) AS resolution_ms_sum,
        sum(reopens) AS reopens
    FROM xp.experience_minute
    WHERE {_SELECTED}
)
""",
    "xp.experience_minute",
    "window_start",
)

# An alert is one row per transition; the firing row describes the episode and
# the resolved row, when there is one, says it ended. An alert belongs to the
# range when its period overlaps it.
ALERTS = Panel(
    "alerts",
    "Experience alerts",
    "Drops the detector found: the metric, where, how far from its baseline, and the "
    "segment that explains most of the drop.",
    "table",
    f"""
SELECT
    period_start,
    period_end,
    metric,
    channel,
    stage,
    segment,
    severity,
    observed,
    baseline,
    change,
    alert_id IN (SELECT alert_id FROM xp.alerts WHERE status = 'resolved') AS resolved
FROM xp.alerts
WHERE status = 'firing' AND period_end >= $__fromTime AND period_start <= $__toTime
  AND {_CHANNEL} AND {_STAGE}
ORDER BY period_start, metric
""",
    "xp.alerts",
    "period_start",
    width=24,
)

#: The alerts again, shaped as Grafana annotations on every dashboard's time axis.
ALERT_ANNOTATIONS_SQL = f"""
SELECT
    period_start AS time,
    period_end AS timeEnd,
    concat(severity, ': ', metric, ' ', channel, '/', stage, ' ',
           toString(round(observed, 2)), ' vs ', toString(round(baseline, 2)),
           if(segment = '', '', concat(' (', segment, ')'))) AS text,
    concat(metric, ',', channel, ',', stage) AS tags
FROM ({ALERTS.sql})
"""

# --- errors, crashes and vitals ------------------------------------------------

_RATES = ",\n    ".join(
    _ratio(f"sumIf(failures, stage = '{stage}')", f"sumIf(events, stage = '{stage}')", 1000, 2)
    + f" AS {stage}"
    for stage in STAGES
)
ERRORS_OVER_TIME = Panel(
    "errors_over_time",
    "Errors and crashes per 1,000 events, by stage",
    "`error` and `crash` events per 1,000 events of the stage the identity was in.",
    "timeseries",
    f"""
SELECT
    time,
    {_RATES}
FROM
(
    SELECT $__timeInterval(window_start) AS time, stage, sum(events) AS events
    FROM xp.stage_minute
    WHERE {_SELECTED}
    GROUP BY time, stage
) AS volume
LEFT JOIN
(
    SELECT $__timeInterval(window_start) AS time, stage, sum(errors + crashes) AS failures
    FROM xp.experience_minute
    WHERE {_SELECTED}
    GROUP BY time, stage
) AS failures USING (time, stage)
GROUP BY time
ORDER BY time
""",
    "xp.stage_minute",
    "window_start",
    min_interval_s=300,
)

ERRORS = Panel(
    "errors",
    "Where errors and crashes happen",
    "Errors and crashes per channel and stage, and per 1,000 events there.",
    "table",
    f"""
SELECT
    channel,
    stage,
    events,
    errors,
    crashes,
    {_ratio("errors + crashes", "events", 1000, 2)} AS errors_per_1000
FROM
(
    SELECT channel, stage, sum(events) AS events
    FROM xp.stage_minute
    WHERE {_SELECTED}
    GROUP BY channel, stage
) AS volume
LEFT JOIN
(
    SELECT channel, stage, sum(errors) AS errors, sum(crashes) AS crashes
    FROM xp.experience_minute
    WHERE {_SELECTED}
    GROUP BY channel, stage
) AS failures USING (channel, stage)
WHERE events > 0
{_BY_CHANNEL_AND_STAGE}
""",
    "xp.stage_minute",
    "window_start",
)

CRASH_FREE = Panel(
    "crash_free",
    "Crash-free sessions",
    "Sessions without a crash, per channel (%).",
    "table",
    f"""
SELECT
    channel,
    sessions,
    crash_sessions,
    round(100 * (1 - crash_sessions / nullIf(sessions, 0)), 2) AS crash_free_pct
FROM
(
    SELECT channel, sum(sessions) AS sessions, sum(crash_sessions) AS crash_sessions
    FROM xp.experience_minute
    WHERE {_SELECTED}
    GROUP BY channel
)
WHERE sessions > 0
ORDER BY channel
""",
    "xp.experience_minute",
    "window_start",
)

_GOOD_SHARES = ",\n    ".join(
    _ratio(f"sum({v}_good)", f"sum({v}_count)", 100, 1) + f" AS {v.upper()}" for v in VITAL_NAMES
)
VITALS_OVER_TIME = _time_series(
    "vitals_over_time",
    "Web vitals: share of good experiences",
    "Share of samples within Google's 'good' threshold: LCP <= 2.5 s, INP <= 200 ms, "
    "CLS <= 0.1, FCP <= 1.8 s, TTFB <= 800 ms (%).",
    _GOOD_SHARES,
    "xp.experience_minute",
    "window_start",
    where=f"{_CHANNEL} AND {_STAGE}",
    having=" + ".join(f"sum({v}_count)" for v in VITAL_NAMES) + " > 0",
    unit="percent",
    min_interval_s=300,
)

_VITAL_COLUMNS = ",\n    ".join(
    f"{v}_count,\n    " + _ratio(f"{v}_good", f"{v}_count", 100, 1) + f" AS {v}_good_pct"
    for v in VITAL_NAMES
)
_VITAL_SUMS = ",\n        ".join(
    f"sum({v}_{part}) AS {v}_{part}" for v in VITAL_NAMES for part in ("count", "good")
)
_VITAL_TOTAL = " + ".join(f"{v}_count" for v in VITAL_NAMES)
VITALS = Panel(
    "vitals",
    "Web vitals by stage",
    "Good share of each web vital per channel and stage, with the LCP sample count.",
    "table",
    f"""
SELECT
    channel,
    stage,
    {_VITAL_COLUMNS}
FROM
(
    SELECT
        channel,
        stage,
        {_VITAL_SUMS}
    FROM xp.experience_minute
    WHERE {_SELECTED}
    GROUP BY channel, stage
)
WHERE {_VITAL_TOTAL} > 0
{_BY_CHANNEL_AND_STAGE}
""",
    "xp.experience_minute",
    "window_start",
)

# --- pipeline health ----------------------------------------------------------

# Rejected and duplicate messages are counted by when they arrived: a rejected
# message has no event time to trust.
OVERVIEW = Panel(
    "overview",
    "Stored, rejected and duplicate events",
    "Valid events stored (by event time) and the identities behind them; rejected and "
    "duplicate messages by arrival time.",
    "stat",
    f"""
SELECT
    count() AS events,
    uniqExact(identity) AS identities,
    minOrNull(occurred_at) AS first_event,
    maxOrNull(occurred_at) AS last_event,
    (SELECT count() FROM xp.rejected_events WHERE $__timeFilter(received_at)) AS rejected,
    (SELECT count() FROM xp.duplicates WHERE $__timeFilter(received_at)) AS duplicates
FROM xp.events
WHERE $__timeFilter(occurred_at) AND {_SOURCE}
""",
    "xp.events",
    "occurred_at",
    width=24,
    height=5,
)

_PER_CHANNEL = ",\n        ".join(f"sumIf(events, channel = '{c}') AS {c}" for c in CHANNELS)
_PER_MINUTE = ",\n    ".join(f"round({c} / minutes, 1) AS {c}" for c in CHANNELS)
THROUGHPUT = Panel(
    "throughput",
    "Events per minute by channel",
    "Valid events stored per minute of event time, averaged over the period.",
    "timeseries",
    f"""
SELECT
    time,
    {_PER_MINUTE}
FROM
(
    SELECT
        $__timeInterval(window_start) AS time,
        greatest(1, uniqExact(window_start)) AS minutes,
        {_PER_CHANNEL}
    FROM xp.stage_minute
    WHERE $__timeFilter(window_start) AND {_CHANNEL}
    GROUP BY time
)
ORDER BY time
""",
    "xp.stage_minute",
    "window_start",
)

ARRIVAL_DELAY = _time_series(
    "arrival_delay",
    "Arrival delay",
    "Seconds from an event's (clock-corrected) time to its arrival on Kafka, p50 and p95. "
    "Growing delays bring events near the allowed lateness, after which they are rejected.",
    "quantile(0.5)(dateDiff('millisecond', occurred_at, received_at)) / 1000 AS p50,\n"
    "    quantile(0.95)(dateDiff('millisecond', occurred_at, received_at)) / 1000 AS p95",
    "xp.events",
    "occurred_at",
    where=_SOURCE,
    unit="s",
)

_PER_REASON = ",\n    ".join(f"countIf(reason = '{r}') AS {r}" for r in REASONS)
REJECTIONS_OVER_TIME = _time_series(
    "rejections_over_time",
    "Rejected messages by reason",
    "Messages that could not become events, per reason, by arrival time.",
    _PER_REASON,
    "xp.rejected_events",
    "received_at",
)

REJECTIONS = Panel(
    "rejections",
    "Rejections",
    "Rejected messages per reason in the range, by arrival time.",
    "table",
    """
SELECT reason, count() AS messages
FROM xp.rejected_events
WHERE $__timeFilter(received_at)
GROUP BY reason
ORDER BY messages DESC, reason
""",
    "xp.rejected_events",
    "received_at",
)

_RATE = "sum(rate({metric}[$__rate_interval]))"
PROCESSING_RATE = MetricPanel(
    "processing_rate",
    "Worker throughput",
    "Events per second the workers stored, dropped as duplicates or skipped as replays.",
    (
        ("stored", _RATE.format(metric="xp_events_stored_total")),
        ("duplicates", _RATE.format(metric="xp_events_duplicate_total")),
        ("replayed", _RATE.format(metric="xp_events_replayed_total")),
    ),
    unit="ops",
)
REJECTION_RATE = MetricPanel(
    "rejection_rate",
    "Rejections per second by reason",
    "What the workers reject right now, before it reaches ClickHouse.",
    (("{{reason}}", "sum by (reason) (rate(xp_events_rejected_total[$__rate_interval]))"),),
    unit="ops",
)
SINK_LATENCY = MetricPanel(
    "sink_latency",
    "ClickHouse write latency",
    "p50 and p99 seconds per batch written by the sink.",
    tuple(
        (
            f"p{round(q * 100)}",
            f"histogram_quantile({q}, sum by (le) "
            "(rate(xp_sink_write_seconds_bucket[$__rate_interval])))",
        )
        for q in (0.5, 0.99)
    ),
    unit="s",
)
SINK_ERRORS = MetricPanel(
    "sink_errors",
    "ClickHouse write errors",
    "Failed writes per second; the sink retries them with backoff, so a steady non-zero "
    "rate means ClickHouse is down or refusing writes.",
    (("errors", _RATE.format(metric="xp_sink_errors_total")),),
    unit="ops",
)

CONSUMER_LAG = MetricPanel(
    "consumer_lag",
    "Consumer lag",
    "Messages on each topic not yet committed by its consumer group: growing lag means "
    "the workers fall behind (add replicas, up to the partition count).",
    (("{{group}} {{topic}}", "sum by (group, topic) (xp_consumer_lag)"),),
)
COMMIT_AGE = MetricPanel(
    "commit_age",
    "Oldest committed offset",
    "Seconds since the slowest partition's committed offset last moved: a worker that "
    "runs but has stopped consuming shows here first.",
    (("{{group}} {{topic}}", "max by (group, topic) (xp_consumer_commit_age_seconds)"),),
    unit="s",
)

# --- dashboards -----------------------------------------------------------------

DASHBOARDS: tuple[Dashboard, ...] = (
    Dashboard(
        "xp-journey",
        "xp · Journey",
        "The funnel per channel, stage conversion, time to convert, drop-off and segments.",
        (FUNNEL, STAGE_CONVERSION, TIME_TO_CONVERT_OVER_TIME, TIME_TO_CONVERT, DROP_OFF, SEGMENTS),
    ),
    Dashboard(
        "xp-experience",
        "xp · Experience",
        "CSAT, NPS, CES, support times and the experience alerts.",
        (SCORES_OVER_TIME, SCORES, SUPPORT_OVER_TIME, SUPPORT, ALERTS),
    ),
    Dashboard(
        "xp-quality",
        "xp · Errors, crashes and web vitals",
        "Where errors and crashes happen, crash-free sessions and web vitals, by stage.",
        (ERRORS_OVER_TIME, ERRORS, VITALS_OVER_TIME, VITALS, CRASH_FREE),
    ),
    Dashboard(
        "xp-pipeline",
        "xp · Pipeline health",
        "What goes in, what is rejected and how the workers and the sink keep up.",
        (
            OVERVIEW,
            THROUGHPUT,
            ARRIVAL_DELAY,
            REJECTIONS_OVER_TIME,
            REJECTIONS,
            PROCESSING_RATE,
            REJECTION_RATE,
            CONSUMER_LAG,
            COMMIT_AGE,
            SINK_LATENCY,
            SINK_ERRORS,
        ),
    ),
)

PANELS: dict[str, Panel] = {
    panel.key: panel
    for dashboard in DASHBOARDS
    for panel in dashboard.panels
    if isinstance(panel, Panel)
}

# --- expansion ------------------------------------------------------------------

_MACRO = re.compile(r"\$__(\w+)(?:\(([^()]*)\))?")
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}")


class ExpansionError(ValueError):
    """A query uses a macro, variable or format that the expansion does not know."""


def variables_of(sql: str) -> list[str]:
    """The dashboard variables `sql` uses, in order of first use."""
    return list(dict.fromkeys(name for name, _ in _VARIABLE.findall(sql)))


def expand(
    sql: str,
    time_range: TimeRange,
    values: Mapping[str, Sequence[str]] | None = None,
    *,
    interval_s: int = 60,
) -> str:
    """`sql` as the Grafana ClickHouse plugin sends it for this range, interval and variables.

    The macros follow the plugin's own definitions (pkg/macros): whole epoch
    seconds, both ends inclusive. Variables use Grafana's `singlequote`
    format, with backslashes escaped too because ClickHouse reads them as
    escapes. Anything unknown is an error rather than text ClickHouse would
    misread.
    """
    start = int(time_range.start.timestamp())
    end = int(time_range.end.timestamp())
    interval = max(1, int(interval_s))

    def macro(match: re.Match[str]) -> str:
        name, argument = match.group(1), match.group(2)
        if name == "timeFilter" and argument:
            column = argument.strip()
            return f"{column} >= toDateTime({start}) AND {column} <= toDateTime({end})"
        if name == "timeInterval" and argument:
            return f"toStartOfInterval(toDateTime({argument.strip()}), INTERVAL {interval} second)"
        if name == "fromTime" and argument is None:
            return f"toDateTime({start})"
        if name == "toTime" and argument is None:
            return f"toDateTime({end})"
        raise ExpansionError(f"unknown macro {match.group(0)!r}")

    def variable(match: re.Match[str]) -> str:
        name, form = match.group(1), match.group(2)
        if values is None or name not in values:
            raise ExpansionError(f"no value for variable ${{{name}}}")
        chosen = list(values[name])
        if not chosen:
            raise ExpansionError(f"variable ${{{name}}} has no values")
        if form == "singlequote":
            return ",".join(_literal(v) for v in chosen)
        if form is None:
            return ",".join(chosen)
        raise ExpansionError(f"unknown format {form!r} of variable ${{{name}}}")

    return _VARIABLE.sub(variable, _MACRO.sub(macro, sql))


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def all_values() -> dict[str, tuple[str, ...]]:
    """Every value of the fixed variables: what "All" selects on a dashboard."""
    return {v.name: v.values for v in VARIABLES if v.values}


def interval_for(panel: Panel, time_range: TimeRange, points: int = 48) -> int:
    """Seconds per point: about `points` points over the range, never below the panel's minimum.

    Grafana does the same from the panel's width and its `interval`; rounding
    up to whole minutes keeps every bucket a sum of whole minute windows.
    """
    per_point = time_range.seconds / points
    minutes = max(1, -(-int(per_point) // 60))
    return max(panel.min_interval_s, minutes * 60)
