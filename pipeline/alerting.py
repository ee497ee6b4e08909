"""Drop alerts inside the worker: read minutes, run the detector, write what it decides.

The detector (`pipeline/drops.py`) runs on the data's own clock, never the
wall clock: a period is judged once every partition's stored data has passed
its end by `alert_settle_s`, so a backfill with `xp process` raises the same
alerts as the same traffic did live. Only the leader of the worker group
evaluates (Faust's leader election), and everything it reads comes from the
public views, summed over partitions, whichever worker wrote them.

Each transition becomes a row of `xp.alerts` (through the one ClickHouse sink),
a JSON event on the alerts topic and a Prometheus gauge. Alert ids are
deterministic and rows are keyed by (alert_id, status), so evaluating a period
again, after a restart or a failed write, rewrites the same rows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from clickhouse_connect.driver.client import Client

from pipeline import observability as obs
from pipeline.clickhouse import ALERT_COLUMNS, Row, Rows, query
from pipeline.config import Settings
from pipeline.drops import (
    ALL_STAGES,
    CONVERSION,
    METRIC_BY_NAME,
    Comparison,
    Detector,
    DetectorConfig,
    Episode,
    History,
    Point,
    SegmentCounts,
    SeriesKey,
    Transition,
    attribute,
    series_points,
)
from pipeline.journey import STAGES
from pipeline.windows import EXPERIENCE_COLUMNS, VITAL_GOOD

if TYPE_CHECKING:
    from pipeline.worker import Worker

log = logging.getLogger("xp.alerts")

#: Wall seconds between evaluations; each evaluates every period the data completed since.
TICK_S = 5.0
#: A partition whose stored data has not moved for this long (wall clock) gets no
#: traffic, or is stuck: either way it stops holding back the others' event clock.
IDLE_AFTER_S = 60.0
#: A gap between ticks this long means another worker led meanwhile.
RESYNC_AFTER_S = 5 * TICK_S
#: The position of a partition that has stored nothing yet.
_NOTHING = -(2**62)
#: Periods judged per read of the minutes: bounds memory on a long backfill.
CHUNK = 360
#: How far back ticket openings are looked up when attributing support times.
_TICKET_LOOKBACK_S = 86_400

PROGRESS_SQL = """
SELECT partition, toUnixTimestamp(first_window), toUnixTimestamp(latest_window)
FROM xp.partition_progress
"""

_STAGE_COUNTERS = ("events", "entries")
MINUTES_SQL = f"""
SELECT toUnixTimestamp(window_start) AS t, channel, stage, {", ".join(_STAGE_COUNTERS)},
       {", ".join(EXPERIENCE_COLUMNS)}
FROM xp.stage_minute
FULL OUTER JOIN
(
    SELECT * FROM xp.experience_minute
    WHERE window_start >= toDateTime({{lo}}, 'UTC') AND window_start < toDateTime({{hi}}, 'UTC')
) AS experience USING (window_start, channel, stage)
WHERE window_start >= toDateTime({{lo}}, 'UTC') AND window_start < toDateTime({{hi}}, 'UTC')
"""

#: Episodes still open: fired and not resolved. Their details carry the frozen baseline.
OPEN_EPISODES_SQL = """
SELECT metric, channel, stage, alert_id, segment, severity, details
FROM xp.alerts
WHERE status = 'firing'
  AND alert_id NOT IN (SELECT alert_id FROM xp.alerts WHERE status = 'resolved')
"""

#: Every alert with its resolution, oldest first: what `xp demo` shows.
ALERTS_SQL = """
SELECT
    f.alert_id AS alert_id, f.detected_at AS detected_at, f.severity AS severity,
    f.metric AS metric, f.channel AS channel,
    f.stage AS stage, f.segment AS segment, f.period_start AS period_start,
    f.period_end AS period_end, f.observed AS observed, f.baseline AS baseline,
    f.change AS change, r.period_end AS resolved_at, f.details AS details
FROM (SELECT * FROM xp.alerts WHERE status = 'firing') AS f
LEFT JOIN (SELECT alert_id, period_end FROM xp.alerts WHERE status = 'resolved') AS r
    USING (alert_id)
ORDER BY f.period_end, f.metric, f.channel, f.stage
SETTINGS join_use_nulls = 1
"""


class Alerting:
    """The detector's I/O: runs on the worker's loop, its queries on the sink's thread."""

    def __init__(self, settings: Settings, client: Client, worker: Worker) -> None:
        self.config = DetectorConfig(
            period_s=settings.alert_period_s,
            baseline_s=settings.alert_baseline_s,
            false_alarm_rate=settings.alert_false_alarm_rate,
        )
        self.settle_s = settings.alert_settle_s
        self.partitions = settings.partitions
        self.client = client
        self.worker = worker
        self.detector: Detector | None = None
        #: End of the last period judged and written.
        self.cursor: int | None = None
        self._moved: dict[int, tuple[int, float]] = {}
        self._series: set[SeriesKey] = set()
        #: Per alert, the (segment, severity) last published; per series, its active gauge.
        self._told: dict[str, tuple[str, str]] = {}
        self._shown: dict[SeriesKey, tuple[str, ...]] = {}
        self._lock = asyncio.Lock()
        self._ticked: float | None = None
        self.topic = worker.app.topic(
            settings.alerts_topic, key_serializer="raw", value_serializer="raw"
        )
        worker.app.timer(TICK_S, on_leader=True, name="xp-alerts")(self.tick)

    async def tick(self) -> None:
        """Judge whatever the data completed; a failure is retried from the same period.

        Ticks stop while another worker leads; one that comes after such a
        gap takes the open episodes from `xp.alerts` again, which the other
        leader may have changed meanwhile.
        """
        now = time.monotonic()
        if self._ticked is not None and now - self._ticked > RESYNC_AFTER_S:
            self._forget()
        self._ticked = now
        try:
            async with self._lock:
                await self._advance(final=False)
        except Exception:
            self._forget()
            log.exception("alert evaluation failed; retrying at the next tick")

    def _forget(self) -> None:
        """Drop the episodes in memory; the next evaluation rebuilds them (and their
        gauges) from xp.alerts, consistent with what was written."""
        self.detector = None
        self._told.clear()
        for labels in self._shown.values():
            _remove(obs.ALERT_ACTIVE, labels)
        self._shown.clear()

    async def finish(self) -> None:
        """Judge every period up to the end of the stored data: the input is complete.

        `xp process` and `xp worker --until-idle` call this once everything is
        stored, so their last periods are judged before they report.
        """
        async with self._lock:
            await self._advance(final=True)

    async def _query(self, sql: str) -> list[Row]:
        _, rows = await self.worker.in_sink_thread(query, self.client, sql)
        return rows

    async def _advance(self, *, final: bool) -> None:
        progress = await self._query(PROGRESS_SQL)
        if not progress:
            return
        clock = self._clock(progress, final=final)
        first_data = min(int(first) for _, first, _ in progress)
        if self.detector is None:
            self.detector = Detector(self.config, await self._open_episodes())
            self._show_open(self.detector.active.values())
        # A starting leader judges the baseline span again, rewriting the same
        # rows, to catch up on what a stop interrupted; never before the worst
        # period of an open episode, which it carries on.
        resume = clock - self.config.baseline_s if self.cursor is None else self.cursor + 60
        peaks = [episode.peak_at + 60 for episode in self.detector.active.values()]
        start = max(self.detector.first_period_end(first_data), resume, *peaks)
        ends = list(range(start, clock + 1, 60))
        if ends:
            log.info("judging %d periods ending %s to %s", len(ends), ends[0], ends[-1])
        for i in range(0, len(ends), CHUNK):
            await self._judge(ends[i : i + CHUNK], first_data)

    def _clock(self, progress: Sequence[Row], *, final: bool) -> int:
        """The last period end every partition's data has passed (or all data, when final).

        A partition that stored nothing yet counts as being at the beginning
        of time: a backfill feeds partitions unevenly, and judging a period
        before all of them reached it would judge a part of its traffic.
        """
        now = time.monotonic()
        stored = {int(partition): int(latest) for partition, _, latest in progress}
        for partition in range(self.partitions):
            latest = stored.get(partition, _NOTHING)
            seen = self._moved.get(partition)
            if seen is None or seen[0] != latest:
                self._moved[partition] = (latest, now)
        newest = max(stored.values())
        if final:
            return newest + 60 - self.settle_s
        live = [
            latest
            for latest, moved in self._moved.values()
            if latest == newest or now - moved < IDLE_AFTER_S
        ]
        return min(live) - self.settle_s

    async def _judge(self, ends: list[int], first_data: int) -> None:
        assert self.detector is not None
        detector = self.detector
        history = await self._history(*detector.history_range(ends[0], ends[-1]), first_data)
        week_lo, week_hi = detector.week_range(ends[0], ends[-1])
        week = await self._history(week_lo, week_hi, first_data) if first_data < week_hi else None
        rows: dict[tuple[str, str], Row] = {}
        news: list[Row] = []
        transitions: list[Transition] = []
        evaluation = None
        for end in ends:
            evaluation = detector.evaluate(end, history, week)
            for transition in evaluation.transitions:
                episode = transition.episode
                if transition.status == "firing":
                    await self._attribute(episode)
                row = alert_row(transition, self.config)
                rows[(episode.alert_id, transition.status)] = row
                told = (episode.segment, episode.severity)
                # Updates of an open alert are news only when where or how bad changed.
                if transition.status == "resolved" or self._told.get(episode.alert_id) != told:
                    news.append(row)
                    self._told[episode.alert_id] = told
                transitions.append(transition)
        if rows:
            await self.worker.in_sink_thread(
                self.worker.sink.write, Rows(alerts=list(rows.values()))
            )
        for row in news:
            record = dict(zip(ALERT_COLUMNS, row, strict=True))
            await self._publish(record)
            log.warning(
                "alert %s %s %s/%s/%s segment=%s",
                record["status"],
                record["alert_id"],
                record["metric"],
                record["channel"],
                record["stage"],
                record["segment"] or "-",
            )
        self.cursor = ends[-1]
        obs.ALERT_EVENT_TIME.set(self.cursor)
        for transition in transitions:
            self._show(transition)
        if evaluation is not None:
            self._show_series(evaluation.series)

    async def _history(self, lo: int, hi: int, first_data: int) -> History:
        rows = await self._query(MINUTES_SQL.format(lo=lo, hi=hi))
        names = ("t", "channel", "stage", *_STAGE_COUNTERS, *EXPERIENCE_COLUMNS)
        by_minute: dict[int, dict[tuple[str, str], dict[str, int]]] = {}
        for row in rows:
            record = dict(zip(names, row, strict=True))
            counters = {k: int(v or 0) for k, v in record.items() if k not in names[:3]}
            by_minute.setdefault(int(record["t"]), {})[(record["channel"], record["stage"])] = (
                counters
            )
        minutes: dict[int, dict[SeriesKey, Point]] = {
            t: series_points(cells) for t, cells in by_minute.items()
        }
        return History(lo, hi, minutes, first_data)

    async def _open_episodes(self) -> list[Episode]:
        episodes = []
        for metric, channel, stage, alert, segment, severity, details in await self._query(
            OPEN_EPISODES_SQL
        ):
            saved = orjson.loads(details)["episode"]
            key = (metric, channel, stage)
            episodes.append(Episode.from_json(key, alert, severity, segment, saved))
            self._told[alert] = (segment, severity)
        return episodes

    async def _attribute(self, episode: Episode) -> None:
        """Name the segment to blame, from the events of the worst period and the baseline."""
        metric, channel, stage = episode.key
        recent = (episode.peak_at - self.config.period_s, episode.peak_at)
        baseline = (episode.baseline_start, episode.baseline_end)
        rows = await self._query(segment_sql(metric, channel, stage, baseline, recent))
        result = attribute(METRIC_BY_NAME[metric], segment_counts(rows))
        episode.segment = result.segment
        episode.candidates = [c.to_json() for c in result.candidates]

    async def _publish(self, record: dict[str, Any]) -> None:
        event = {**record, "details": orjson.loads(record["details"])}
        for name in ("detected_at",):
            event[name] = _iso_ms(record[name])
        for name in ("period_start", "period_end"):
            event[name] = _iso_ms(record[name] * 1000)
        sent = await self.topic.send(key=record["alert_id"].encode(), value=orjson.dumps(event))
        await sent

    def _show(self, transition: Transition) -> None:
        episode = transition.episode
        obs.ALERT_TRANSITIONS.labels(transition.status).inc()
        shown = self._shown.pop(episode.key, None)
        if shown is not None:
            _remove(obs.ALERT_ACTIVE, shown)
        if transition.status == "firing":
            self._show_open([episode])

    def _show_open(self, episodes: Iterable[Episode]) -> None:
        for episode in episodes:
            labels = (*episode.key, episode.severity, episode.segment)
            obs.ALERT_ACTIVE.labels(*labels).set(1)
            self._shown[episode.key] = labels

    def _show_series(self, series: dict[SeriesKey, tuple[Comparison, int]]) -> None:
        """Gauges of the series the last evaluation tested; the others are withdrawn."""
        for key in self._series - series.keys():
            for gauge in (obs.EXPERIENCE_VALUE, obs.EXPERIENCE_BASELINE, obs.EXPERIENCE_UNITS):
                _remove(gauge, key)
        for key, (comparison, units) in series.items():
            obs.EXPERIENCE_VALUE.labels(*key).set(comparison.observed)
            obs.EXPERIENCE_BASELINE.labels(*key).set(comparison.baseline)
            obs.EXPERIENCE_UNITS.labels(*key).set(units)
        self._series = set(series)


def _remove(gauge: Any, labels: Sequence[str]) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        return


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def alert_row(transition: Transition, config: DetectorConfig) -> Row:
    """The `xp.alerts` row of a transition; every value follows from the data alone.

    A firing row describes the episode's worst period so far and is detected
    at the episode's start; a resolved row describes the period that recovered.
    """
    episode = transition.episode
    metric = METRIC_BY_NAME[episode.key[0]]
    if transition.status == "firing":
        detected, end, comparison = episode.started, episode.peak_at, episode.peak
    else:
        detected, end, comparison = transition.at, transition.at, transition.comparison
    details: dict[str, Any] = {
        "unit": metric.unit,
        "worse": "higher" if metric.worse > 0 else "lower",
        "test": {
            "z": round(comparison.z, 3),
            "p_value": comparison.p_value,
            "false_alarm_rate": config.false_alarm_rate,
            "baseline_units": episode.baseline.units,
        },
        "baseline_period": [
            _iso_ms(episode.baseline_start * 1000),
            _iso_ms(episode.baseline_end * 1000),
        ],
        "week_ago": episode.week_ago.to_json() if episode.week_ago else None,
        "candidates": episode.candidates,
        "episode": episode.to_json(),
    }
    return (
        episode.alert_id,
        transition.status,
        detected * 1000,
        *episode.key,
        end - config.period_s,
        end,
        comparison.observed,
        comparison.baseline,
        comparison.change,
        episode.segment,
        episode.severity,
        orjson.dumps(details).decode(),
    )


# --- attribution queries -------------------------------------------------------


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _t(epoch_s: int) -> str:
    return f"toDateTime64({epoch_s}, 3, 'UTC')"


def _score(op: str = "") -> str:
    return f"JSONExtractInt(properties, 'score'){op}"


#: Per metric: (type filter, per-event value) for metrics read from single events.
_EVENT_VALUES: dict[str, tuple[str, str]] = {
    "csat": ("type = 'csat_submitted'", _score(" >= 4")),
    "nps": ("type = 'nps_submitted'", f"multiIf({_score(' >= 9')}, 1, {_score(' <= 6')}, -1, 0)"),
    "ces": ("type = 'ces_submitted'", _score()),
    "error_rate": ("1", "type IN ('error', 'crash')"),
    **{
        f"{name.lower()}_good": (
            f"type = 'web_vital' AND JSONExtractString(properties, 'name') = '{name}'",
            f"JSONExtractFloat(properties, 'value') <= {good}",
        )
        for name, good in VITAL_GOOD.items()
    },
}


def _inner_sql(metric: str, channel: str, stage: str, lo: int, hi: int) -> str:
    """Rows (at, u, x, context): a unit, a value and the segment they belong to."""
    ch, st, span = (
        _quote(channel),
        _quote(stage),
        f"occurred_at >= {_t(lo)} AND occurred_at < {_t(hi)}",
    )
    if metric == CONVERSION.name:
        previous = _quote(STAGES[STAGES.index(stage) - 1])
        return f"""
            SELECT s.entered_at AS at, toUInt8(s.stage = {previous}) AS u,
                   toFloat64(s.stage = {st}) AS x, c.context AS context
            FROM xp.stage_entries AS s
            INNER JOIN
            (
                SELECT identity, stage, argMin(context, occurred_at) AS context
                FROM xp.events
                WHERE source = {ch} AND stage IN ({previous}, {st}) AND {span}
                GROUP BY identity, stage
            ) AS c ON s.identity = c.identity AND s.stage = c.stage
            WHERE s.channel = {ch} AND s.stage IN ({previous}, {st})
              AND s.entered_at >= {_t(lo)} AND s.entered_at < {_t(hi)}"""
    if metric == "crash_rate":
        return f"""
            SELECT min(occurred_at) AS at, 1 AS u, toFloat64(max(type = 'crash')) AS x,
                   argMin(context, occurred_at) AS context
            FROM xp.events WHERE source = {ch} AND {span}
            GROUP BY session_id"""
    if metric in ("first_response_time", "resolution_time"):
        opened = f"occurred_at >= {_t(lo - _TICKET_LOOKBACK_S)} AND occurred_at < {_t(hi)}"
        if metric == "first_response_time":
            done = "[minIf(occurred_at, type = 'agent_reply' AND NOT is_bot)]"
            replied = "countIf(type = 'agent_reply' AND NOT is_bot) > 0"
        else:
            done = "groupArrayIf(occurred_at, type = 'ticket_resolved')"
            replied = "1"
        return f"""
            SELECT at, 1 AS u,
                   toFloat64(toUnixTimestamp64Milli(at) - toUnixTimestamp64Milli(opened)) AS x,
                   context
            FROM
            (
                SELECT minIf(occurred_at, type = 'ticket_opened') AS opened, {done} AS ats,
                       argMin(context, occurred_at) AS context
                FROM
                (
                    SELECT occurred_at, type, identity, context,
                           JSONExtractString(properties, 'ticket_id') AS ticket,
                           JSONExtractBool(properties, 'is_bot') AS is_bot
                    FROM xp.events
                    WHERE source = {ch} AND {opened}
                      AND type IN ('ticket_opened', 'agent_reply', 'ticket_resolved')
                )
                GROUP BY identity, ticket
                HAVING countIf(type = 'ticket_opened') > 0 AND {replied}
            )
            ARRAY JOIN ats AS at
            WHERE at >= {_t(lo)} AND at < {_t(hi)}"""
    condition, value = _EVENT_VALUES[metric]
    stage_filter = "1" if stage == ALL_STAGES else f"stage = {st}"
    return f"""
        SELECT occurred_at AS at, 1 AS u, toFloat64({value}) AS x, context
        FROM xp.events
        WHERE source = {ch} AND {stage_filter} AND {condition} AND {span}"""


def segment_sql(
    metric: str, channel: str, stage: str, baseline: tuple[int, int], recent: tuple[int, int]
) -> str:
    """Units and value totals per context segment in the baseline and the recent period.

    Dimension "" is the whole series. Segments are read from the events'
    `context`, so every dimension any producer sends is a candidate.
    """
    inner = _inner_sql(metric, channel, stage, baseline[0], recent[1])
    return f"""
        SELECT at >= {_t(recent[0])} AS recent, dim, value, sum(u) AS units, sum(x) AS total
        FROM ({inner})
        ARRAY JOIN arrayConcat([''], mapKeys(context)) AS dim,
                   arrayConcat([''], mapValues(context)) AS value
        WHERE at < {_t(baseline[1])} OR at >= {_t(recent[0])}
        GROUP BY recent, dim, value"""


def segment_counts(rows: Iterable[Row]) -> list[SegmentCounts]:
    """Pivot (recent, dim, value, units, total) rows into one record per segment."""
    cells: dict[tuple[str, str], list[float]] = {}
    for recent, dim, value, units, total in rows:
        cell = cells.setdefault((dim, value), [0.0, 0.0, 0.0, 0.0])
        offset = 0 if recent else 2
        cell[offset] += float(units)
        cell[offset + 1] += float(total)
    return [SegmentCounts(dim, value, *cell) for (dim, value), cell in sorted(cells.items())]


# --- reading alerts back ---------------------------------------------------------


def alerts_data(client: Client) -> list[dict[str, Any]]:
    """Every alert with its resolution time, as JSON-ready records."""
    columns, rows = query(client, ALERTS_SQL)
    records = []
    for row in rows:
        record = dict(zip(columns, row, strict=True))
        details = orjson.loads(record.pop("details"))
        record["candidates"] = details["candidates"]
        record["unit"] = details["unit"]
        for name in ("detected_at", "period_start", "period_end", "resolved_at"):
            value = record[name]
            record[name] = value.isoformat() if isinstance(value, datetime) else None
        records.append(record)
    return records


def render_alerts(records: Sequence[dict[str, Any]]) -> str:
    """The alerts section of `xp demo`: what fired, when, where to look, when it recovered."""
    title = "Experience alerts (event time)"
    lines = [title, "─" * len(title)]
    if not records:
        lines.append("  none: no series dropped beyond what its own history explains")
    for r in records:
        what = f"{r['metric']} {r['channel']}/{r['stage']}"
        values = f"{_value(r['observed'], r['unit'])} vs {_value(r['baseline'], r['unit'])}"
        lines.append(f"  {r['severity']:<8} {what}: {values} ({100 * r['change']:+.0f}%)")
        worst = f"{_hhmm(r['period_start'])}-{_hhmm(r['period_end'])}"
        resolved = f"resolved {_hhmm(r['resolved_at'])}" if r["resolved_at"] else "still firing"
        lines.append(f"           fired {_hhmm(r['detected_at'])} (worst {worst}), {resolved}")
        if r["segment"]:
            share = next(c for c in r["candidates"] if c["segment"] == r["segment"])
            lines.append(
                f"           segment {r['segment']}: {100 * share['share_of_drop']:.0f}% of the "
                f"change, from {100 * share['share_of_traffic']:.0f}% of the traffic"
            )
        else:
            lines.append("           segment: none stands out, the change is spread out")
    return "\n".join(lines)


def _value(value: float, unit: str) -> str:
    """A value with its unit, percentages written the usual way (58.3%)."""
    if unit.startswith("%"):
        return f"{value:.1f}{unit}"
    return f"{value:.1f} {unit}" if unit not in ("score", "points") else f"{value:.1f}"


def _hhmm(iso: str | None) -> str:
    return "" if iso is None else iso[11:16]
