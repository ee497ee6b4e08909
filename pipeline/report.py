"""`xp report`: one HTML file with charts and a written summary, for people not on Grafana.

The file is sent on and opened anywhere, so it is self-contained: inline CSS
and SVG (pipeline/charts.py), no script, font or network. Its numbers come
from the dashboards' own queries (pipeline/panels.py), expanded for the time
range the data covers, so the report and Grafana agree for that range.

"What changed" compares the last quarter of the range with the rest, using
the same queries on each part, and only calls a change what a significance
test backs: a report that cries wolf stops being read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from itertools import pairwise
from typing import Any

from pipeline import panels
from pipeline.charts import (
    CHANNEL_COLORS,
    ERROR_COLOR,
    PALETTE,
    Band,
    Bar,
    Format,
    Series,
    bar_chart,
    line_chart,
    number,
)
from pipeline.clickhouse import query
from pipeline.panels import JOURNEY, Panel, TimeRange

#: The share of the range, at its end, that "what changed" compares with the rest.
RECENT_SHARE = 0.25
#: |z| a change needs before the summary mentions it: about 1 in 400 by chance alone
#: for each of the ten or so numbers compared.
SIGNIFICANT_Z = 3.0
#: Fewer responses, tickets or entries than this on either side is too few to compare.
MIN_VOLUME = 20
MAX_CHANGES = 6

# Funnel steps whose rise is good news; more people needing support is not.
_GOOD_STEPS: tuple[tuple[str, str], ...] = tuple(
    (a, b) for a, b in pairwise(JOURNEY) if b != "service"
)

Record = dict[str, Any]


@dataclass(frozen=True)
class Part:
    """The numbers of one period that "what changed" compares."""

    time_range: TimeRange
    funnel: list[Record]
    scores: list[Record]
    support: Record
    errors: list[Record]


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows; `time_range` is None when there is no data yet."""

    time_range: TimeRange | None
    overview: Record = field(default_factory=dict)
    funnel: list[Record] = field(default_factory=list)
    conversion: list[Record] = field(default_factory=list)
    scores_over_time: list[Record] = field(default_factory=list)
    support_over_time: list[Record] = field(default_factory=list)
    scores: list[Record] = field(default_factory=list)
    support: Record = field(default_factory=dict)
    errors: list[Record] = field(default_factory=list)
    alerts: list[Record] = field(default_factory=list)
    earlier: Part | None = None
    recent: Part | None = None


@dataclass(frozen=True)
class Change:
    """One number in the earlier and the recent part, and how sure we are it moved."""

    metric: str
    before: float
    after: float
    unit: str  # "%" for shares (compared in points), otherwise appended to the values
    higher_is_better: bool
    z: float

    @property
    def significant(self) -> bool:
        return abs(self.z) >= SIGNIFICANT_Z

    def sentence(self) -> str:
        rose = self.after > self.before
        verdict = "better" if rose == self.higher_is_better else "worse"
        if self.unit == "%":
            shift = f"{self.after - self.before:+.1f} points".replace("-", "−")
            values = f"{self.before:.1f}% to {self.after:.1f}%"
        else:
            shift = (
                _percent_change((self.after - self.before) / abs(self.before))
                if self.before
                else "from none"
            )
            values = f"{_value(self.before)}{self.unit} to {_value(self.after)}{self.unit}"
        metric = self.metric[0].upper() + self.metric[1:]
        return f"{metric} {'rose' if rose else 'fell'} from {values} ({shift}): {verdict}."


def _percent_change(ratio: float) -> str:
    return f"{ratio:+.0%}".replace("-", "−")


def _value(number: float) -> str:
    return f"{number:,.1f}" if abs(number) < 100 else f"{number:,.0f}"


# --- data -----------------------------------------------------------------------


def collect(client: Any) -> ReportData:
    """Run the report's panel queries over the time range the data covers."""
    values = panels.all_values()
    overview = _rows(client, panels.OVERVIEW, TimeRange.everything(), values)
    first = overview[0]["first_event"] if overview else None
    if first is None:
        return ReportData(time_range=None)
    start = first.replace(second=0, microsecond=0)
    end = overview[0]["last_event"].replace(microsecond=0) + timedelta(seconds=1)
    whole = TimeRange(start, end)
    cut = start + timedelta(minutes=max(1, round(whole.seconds * (1 - RECENT_SHARE) / 60)))

    def part(time_range: TimeRange) -> Part:
        return Part(
            time_range,
            _rows(client, panels.FUNNEL, time_range, values),
            _rows(client, panels.SCORES, time_range, values),
            _first(_rows(client, panels.SUPPORT, time_range, values)),
            _rows(client, panels.ERRORS, time_range, values),
        )

    return ReportData(
        time_range=whole,
        overview=overview[0],
        funnel=_rows(client, panels.FUNNEL, whole, values),
        conversion=_rows(client, panels.STAGE_CONVERSION, whole, values),
        scores_over_time=_rows(client, panels.SCORES_OVER_TIME, whole, values),
        support_over_time=_rows(client, panels.SUPPORT_OVER_TIME, whole, values),
        scores=_rows(client, panels.SCORES, whole, values),
        support=_first(_rows(client, panels.SUPPORT, whole, values)),
        errors=_rows(client, panels.ERRORS, whole, values),
        alerts=_rows(client, panels.ALERTS, whole, values),
        earlier=part(TimeRange(start, cut - timedelta(seconds=1))) if cut < end else None,
        recent=part(TimeRange(cut, end)) if cut < end else None,
    )


def _rows(
    client: Any, panel: Panel, time_range: TimeRange, values: Mapping[str, Sequence[str]]
) -> list[Record]:
    sql = panels.expand(
        panel.sql, time_range, values, interval_s=panels.interval_for(panel, time_range)
    )
    columns, rows = query(client, sql)
    return [
        {
            c: None if isinstance(v, float) and math.isnan(v) else v
            for c, v in zip(columns, row, strict=True)
        }
        for row in rows
    ]


def _first(rows: list[Record]) -> Record:
    return rows[0] if rows else {}


# --- what changed -----------------------------------------------------------------


def changes(earlier: Part, recent: Part) -> list[Change]:
    """Every number both parts have enough volume for, with its z score."""
    found: list[Change] = []
    before_entries, after_entries = _entries(earlier.funnel), _entries(recent.funnel)
    for a, b in _GOOD_STEPS:
        counts = (before_entries[a], before_entries[b], after_entries[a], after_entries[b])
        if min(counts[0], counts[2]) < MIN_VOLUME or min(counts[1], counts[3]) == 0:
            continue
        r1, r2 = counts[1] / counts[0], counts[3] / counts[2]
        # Entries of two stages in a period are counts, not a subset of each
        # other, so the ratio's variance is that of two Poisson counts.
        spread = math.sqrt(
            r1 * r1 * (1 / counts[1] + 1 / counts[0]) + r2 * r2 * (1 / counts[3] + 1 / counts[2])
        )
        found.append(Change(f"{a} → {b}", 100 * r1, 100 * r2, "%", True, (r2 - r1) / spread))

    csat = [_weighted(p.scores, "csat_pct", "csat_responses") for p in (earlier, recent)]
    if min(n for _, n in csat) >= MIN_VOLUME:
        (p1, n1), (p2, n2) = ((p / 100, n) for p, n in csat)
        pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
        spread = math.sqrt(max(pooled * (1 - pooled), 1e-9) * (1 / n1 + 1 / n2))
        found.append(Change("CSAT", 100 * p1, 100 * p2, "%", True, (p2 - p1) / spread))

    # A score's variance is at most (range / 2)², which bounds z from below
    # when only means are stored: NPS per response is -100, 0 or 100, CES 1..7.
    for metric, column, responses, half_range in (
        ("NPS", "nps", "nps_responses", 100.0),
        ("CES", "ces", "ces_responses", 3.0),
    ):
        pair = [_weighted(p.scores, column, responses) for p in (earlier, recent)]
        if min(n for _, n in pair) >= MIN_VOLUME:
            (m1, n1), (m2, n2) = pair
            z = (m2 - m1) / (half_range * math.sqrt(1 / n1 + 1 / n2))
            found.append(Change(metric, m1, m2, "", True, z))

    # Waiting times are skewed like an exponential distribution, whose spread
    # equals its mean: the test for two means then needs only the means.
    for metric, mean, count in (
        ("Mean first response", "mean_first_response_min", "first_responses"),
        ("Mean resolution time", "mean_resolution_min", "resolutions"),
    ):
        t1, t2 = earlier.support.get(mean), recent.support.get(mean)
        k1, k2 = earlier.support.get(count) or 0, recent.support.get(count) or 0
        if t1 and t2 and min(k1, k2) >= MIN_VOLUME:
            z = (t2 - t1) / math.sqrt(t1 * t1 / k1 + t2 * t2 / k2)
            found.append(Change(metric, t1, t2, " min", False, z))

    failures = [_failures(p.errors) for p in (earlier, recent)]
    (f1, e1), (f2, e2) = failures
    if min(e1, e2) >= MIN_VOLUME and f1 + f2 > 0:
        p1, p2 = f1 / e1, f2 / e2
        pooled = (f1 + f2) / (e1 + e2)
        spread = math.sqrt(pooled * (1 - pooled) * (1 / e1 + 1 / e2))
        found.append(
            Change(
                "Errors and crashes per 1,000 events",
                1000 * p1,
                1000 * p2,
                "",
                False,
                (p2 - p1) / spread,
            )
        )
    return found


def _entries(funnel: Iterable[Record]) -> dict[str, int]:
    totals = dict.fromkeys(JOURNEY, 0)
    for row in funnel:
        if row["stage"] in totals:
            totals[row["stage"]] += row["entries"]
    return totals


def _weighted(rows: Iterable[Record], column: str, weight: str) -> tuple[float, int]:
    """A per-channel mean over all channels, weighted by the responses behind each."""
    pairs = [(r[column], r[weight]) for r in rows if r[column] is not None and r[weight]]
    total = sum(n for _, n in pairs)
    return (sum(v * n for v, n in pairs) / total if total else 0.0), total


def _failures(errors: Iterable[Record]) -> tuple[int, int]:
    rows = list(errors)
    return sum(r["errors"] + r["crashes"] for r in rows), sum(r["events"] for r in rows)


@dataclass(frozen=True)
class Summary:
    """What the report says in words: the comparison, then the alerts."""

    lead: str
    moved: list[str]
    steady: list[str]
    alerts: str


def summarize(data: ReportData) -> Summary:
    """What moved in the last part of the range, what held steady, and which alerts fired."""
    lead, moved, steady = "The range is too short to compare its parts.", [], []
    if data.earlier is not None and data.recent is not None:
        found = changes(data.earlier, data.recent)
        ranked = sorted((c for c in found if c.significant), key=lambda c: -abs(c.z))
        moved = [c.sentence() for c in ranked[:MAX_CHANGES]]
        steady = [c.metric for c in found if not c.significant]
        recent = data.recent.time_range
        lead = (
            f"The last {_duration(recent.seconds)} ({_clock(recent.start)}–{_clock(recent.end)} "
            f"UTC) compared with the {_duration(data.earlier.time_range.seconds)} before: "
            + ("" if moved else "nothing moved beyond normal variation.")
        )
    return Summary(lead, moved, steady, _alerts_sentence(data.alerts))


def _alerts_sentence(alerts: list[Record]) -> str:
    if not alerts:
        return "No alerts were raised in this period."
    named = [f"{i}. {_alert_name(a)}" for i, a in enumerate(alerts[:3], start=1)]
    more = f" and {len(alerts) - 3} more" if len(alerts) > 3 else ""
    count = f"{len(alerts)} alert{'s' if len(alerts) > 1 else ''}"
    return f"{count} fired, marked in red on the charts: {', '.join(named)}{more}."


def _alert_name(alert: Record) -> str:
    segment = f" ({alert['segment']})" if alert["segment"] else ""
    return f"{alert['metric']} on {alert['channel']}/{alert['stage']}{segment}"


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"{minutes} minutes"
    hours = minutes / 60
    return f"{hours:.0f} hours" if hours < 48 else f"{hours / 24:.0f} days"


def _clock(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%H:%M")


# --- HTML -----------------------------------------------------------------------


def render(data: ReportData, generated: datetime | None = None) -> str:
    """The whole report as one HTML document."""
    generated = generated or datetime.now(UTC)
    if data.time_range is None:
        body = (
            '<section class="card"><h2>No data yet</h2><p>xp has not stored any events. '
            "Run <code>xp demo</code> or <code>xp process FILE</code>, then "
            "<code>xp report</code> again.</p></section>"
        )
        return _page("No data yet", body, generated)
    tr = data.time_range
    bands = [
        Band(a["period_start"].timestamp(), a["period_end"].timestamp(), str(i), _alert_name(a))
        for i, a in enumerate(data.alerts, start=1)
    ]
    start, end = tr.start.timestamp(), tr.end.timestamp()
    span = f"{tr.start:%d %b %Y %H:%M} – {tr.end:%H:%M} UTC ({_duration(tr.seconds)})"
    sections = [
        _tiles(data),
        _card("What changed", _summary(summarize(data)), wide=True),
        _card(
            "Journey funnel",
            _funnel(data.funnel),
            "Identities entering each stage by channel, with the step conversion.",
        ),
        _card(
            "Stage conversion over time",
            _time_chart(
                data.conversion,
                start,
                end,
                bands,
                columns=[f"{a} → {b}" for a, b in _GOOD_STEPS],
                fmt=lambda v: f"{v:.0f}%",
            ),
            "Entries of a stage over entries of the stage before, per period (%).",
        ),
        _scores(data, start, end, bands),
        _card(
            "Support times",
            _time_chart(data.support_over_time, start, end, bands, fmt=lambda v: f"{v:.0f}m"),
            _support_note(data.support),
        ),
        _card(
            "Errors and crashes by stage",
            _errors(data.errors),
            "Per 1,000 events of the stage, all channels.",
        ),
        _alerts(data.alerts),
    ]
    return _page(span, "".join(sections), generated)


def _page(subtitle: str, body: str, generated: datetime) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>xp report · {escape(subtitle)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>xp experience report</h1><p>{escape(subtitle)}</p></header>"
        f"<main>{body}</main><footer>Generated {generated:%Y-%m-%d %H:%M} UTC by "
        "<code>xp report</code> from the same queries as the Grafana dashboards.</footer>"
        "</body></html>\n"
    )


def _card(title: str, content: str, note: str = "", *, wide: bool = False) -> str:
    note_html = f"<p class='note'>{escape(note)}</p>" if note else ""
    return (
        f"<section class='card{' wide' if wide else ''}'><h2>{escape(title)}</h2>"
        f"{content}{note_html}</section>"
    )


def _tiles(data: ReportData) -> str:
    o, s = data.overview, data.support
    csat, csat_n = _weighted(data.scores, "csat_pct", "csat_responses")
    nps, nps_n = _weighted(data.scores, "nps", "nps_responses")
    entries = _entries(data.funnel)
    converted = entries["conversion"] / entries["awareness"] if entries["awareness"] else None
    tiles = [
        ("Events", f"{o.get('events', 0):,}"),
        ("Identities", f"{o.get('identities', 0):,}"),
        ("Awareness → conversion", f"{converted:.1%}" if converted is not None else "—"),
        ("CSAT", f"{csat:.1f}%" if csat_n else "—"),
        ("NPS", _signed(nps) if nps_n else "—"),
        ("First response", _minutes(s.get("mean_first_response_min"))),
        ("Resolution", _minutes(s.get("mean_resolution_min"))),
        ("Alerts", f"{len(data.alerts)}"),
    ]
    return (
        "<section class='tiles wide'>"
        + "".join(
            f"<div class='tile'><span>{escape(name)}</span><b>{escape(value)}</b></div>"
            for name, value in tiles
        )
        + "</section>"
    )


def _summary(summary: Summary) -> str:
    moved = "".join(f"<li>{escape(line)}</li>" for line in summary.moved)
    steady = "Steady: " + ", ".join(summary.steady) + "." if summary.steady else ""
    return (
        f"<p>{escape(summary.lead)}</p>"
        + (f"<ul class='summary'>{moved}</ul>" if moved else "")
        + (f"<p class='note'>{escape(steady)}</p>" if steady else "")
        + f"<p class='alerts'>{escape(summary.alerts)}</p>"
    )


def _minutes(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} min"


def _funnel(rows: list[Record]) -> str:
    counts: dict[str, dict[str, int]] = {stage: {} for stage in JOURNEY}
    for row in rows:
        counts[row["stage"]][row["channel"]] = row["entries"]
    entries = _entries(rows)
    bars = []
    for before, stage in zip((None, *JOURNEY), JOURNEY, strict=False):
        segments = []
        for channel, color in CHANNEL_COLORS.items():
            n = counts[stage].get(channel, 0)
            segments.append((n, color, f"{channel}: {n:,}"))
        note = f"{entries[stage]:,}"
        if before and entries[before]:
            note += f" · {100 * entries[stage] / entries[before]:.1f}%"
        bars.append(Bar(stage, tuple(segments), note))
    label = "Identities entering each journey stage by channel"
    return _legend(CHANNEL_COLORS) + bar_chart(bars, kind="funnel", label=label)


def _legend(colors: Mapping[str, str]) -> str:
    return (
        "<div class='legend'>"
        + "".join(
            f"<span><i style='background:{color}'></i>{escape(name)}</span>"
            for name, color in colors.items()
        )
        + "</div>"
    )


def _time_chart(
    rows: list[Record],
    start: float,
    end: float,
    bands: Sequence[Band],
    *,
    columns: Sequence[str] | None = None,
    fmt: Format = number,
    zero_based: bool = True,
    width: int = 560,
    height: int = 220,
) -> str:
    """A time-series panel's rows as a line chart: one line per column after `time`."""
    if not rows:
        return "<p class='empty'>No data in this period.</p>"
    names = list(columns or [c for c in rows[0] if c != "time"])
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    series = [
        Series(name, colors[name], tuple((r["time"].timestamp(), r[name]) for r in rows))
        for name in names
    ]
    chart = line_chart(
        series,
        start=start,
        end=end,
        bands=bands,
        zero_based=zero_based,
        width=width,
        height=height,
        label=", ".join(names),
        fmt=fmt,
    )
    return (_legend(colors) if len(names) > 1 else "") + chart


def _scores(data: ReportData, start: float, end: float, bands: Sequence[Band]) -> str:
    charts = []
    for column, title, fmt, zero_based in (
        ("CSAT", "CSAT (% of 4-5)", lambda v: f"{v:.0f}%", True),
        ("NPS", "NPS", _signed, True),
        ("CES", "CES (1-7)", lambda v: f"{v:.1f}", False),
    ):
        rows = [r for r in data.scores_over_time if r[column] is not None]
        chart = _time_chart(
            rows,
            start,
            end,
            bands,
            columns=[column],
            fmt=fmt,
            zero_based=zero_based,
            width=360,
            height=180,
        )
        charts.append(f"<div><h3>{escape(title)}</h3>{chart}</div>")
    return _card(
        "Experience scores over time",
        "<div class='trio'>" + "".join(charts) + "</div>",
        "CSAT: share of scores 4-5. NPS: % promoters (9-10) minus % detractors (0-6). "
        "CES: mean effort score, 1-7, higher is easier.",
        wide=True,
    )


def _signed(value: float) -> str:
    return f"{value:+.0f}".replace("-", "−") if value else "0"


def _support_note(support: Record) -> str:
    if not support.get("first_responses"):
        return "No support tickets in this period."
    return (
        f"Mean first response {_minutes(support['mean_first_response_min'])} over "
        f"{support['first_responses']:,} tickets; mean resolution "
        f"{_minutes(support['mean_resolution_min'])} over {support['resolutions']:,}; "
        f"{support['reopen_pct'] or 0:.1f}% reopened."
    )


def _errors(rows: list[Record]) -> str:
    by_stage: dict[str, list[int]] = {}
    for row in rows:
        totals = by_stage.setdefault(row["stage"], [0, 0])
        totals[0] += row["errors"] + row["crashes"]
        totals[1] += row["events"]
    bars = [
        Bar(stage, ((rate, ERROR_COLOR, f"{rate:.2f} per 1,000 events"),), f"{rate:.1f}")
        for stage in panels.STAGES
        if stage in by_stage and by_stage[stage][1] >= MIN_VOLUME
        for rate in [1000 * by_stage[stage][0] / by_stage[stage][1]]
    ]
    if not bars:
        return "<p class='empty'>No events in this period.</p>"
    return bar_chart(bars, kind="bars", label="Errors per 1,000 events by stage")


def _alerts(alerts: list[Record]) -> str:
    if not alerts:
        return _card(
            "Alerts",
            "<p class='empty'>No alerts were raised in this period: no metric dropped beyond "
            "what its own history explains.</p>",
            wide=True,
        )
    head = ("", "Period (UTC)", "Metric", "Where", "Observed", "Baseline", "Change", "Segment", "")
    body = "".join(
        "<tr>"
        f"<td><span class='badge'>{i}</span></td>"
        f"<td>{a['period_start']:%H:%M}–{a['period_end']:%H:%M}</td>"
        f"<td>{escape(a['metric'])}</td><td>{escape(a['channel'])}/{escape(a['stage'])}</td>"
        f"<td>{_value(a['observed'])}</td><td>{_value(a['baseline'])}</td>"
        f"<td>{_percent_change(a['change'])}</td><td>{escape(a['segment'] or '—')}</td>"
        f"<td>{'resolved' if a['resolved'] else escape(a['severity'])}</td>"
        "</tr>"
        for i, a in enumerate(alerts, start=1)
    )
    table = (
        "<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )
    return _card("Alerts", table, wide=True)


_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f3f4f6;color:#111827;
 font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
header{background:#111827;color:#f9fafb;padding:20px 32px}
header h1{margin:0;font-size:22px;font-weight:600}
header p{margin:4px 0 0;color:#d1d5db}
main{max-width:1200px;margin:0 auto;padding:20px;display:grid;
 grid-template-columns:repeat(2,minmax(0,1fr));gap:16px}
.card{background:#fff;border-radius:10px;padding:16px 20px;box-shadow:0 1px 2px #0000001a}
.wide{grid-column:1/-1}
h2{font-size:16px;margin:0 0 10px}
h3{font-size:13px;margin:0 0 4px;color:#374151}
.note{color:#6b7280;font-size:12px;margin:8px 0 0}
.empty{color:#6b7280;font-style:italic}
.tiles{display:grid;grid-template-columns:repeat(8,minmax(0,1fr));gap:12px}
.tile{background:#fff;border-radius:10px;padding:12px 14px;box-shadow:0 1px 2px #0000001a}
.tile span{display:block;color:#6b7280;font-size:12px}
.tile b{font-size:20px;font-weight:600}
.summary{margin:0;padding-left:20px}
.summary li{margin:2px 0}
.legend{display:flex;gap:14px;font-size:12px;color:#374151;margin-bottom:4px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px}
.trio{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:16px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e5e7eb}
th{color:#6b7280;font-weight:500}
footer{color:#6b7280;font-size:12px;text-align:center;padding:0 0 24px}
.badge{display:inline-block;width:18px;height:18px;border-radius:9px;background:#dc2626;
 color:#fff;font-size:11px;font-weight:600;text-align:center;line-height:18px}
.alerts{margin-bottom:0}
"""
