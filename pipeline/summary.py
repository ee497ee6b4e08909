"""The summary printed at the end of `xp demo`, and the same numbers as data.

Every number comes from the public views (docs/relations.md) through one
named query each, so Grafana panels and `xp report` can reuse exactly the
SQL behind what people read here. Ratios are computed in SQL with
`nullIf(denominator, 0)`: an empty relation yields NULL, shown as "—",
never a division by zero.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pipeline.clickhouse import query
from pipeline.journey import CONVERSION, ENTERED_BY, NPS_ADVOCATE, STAGES

#: How long an identity must have been quiet to count as dropped off (metrics.md).
DROP_OFF_INACTIVITY_S = 1800

_JOURNEY = STAGES[1:]
_STAGE_ARRAY = "[" + ", ".join(f"'{s}'" for s in _JOURNEY) + "]"
_ENTERING_TYPES = ", ".join(f"'{t}'" for t in sorted(set().union(*ENTERED_BY.values())))

OVERVIEW_SQL = """
SELECT
    count() AS events,
    uniqExact(identity) AS identities,
    minOrNull(occurred_at) AS first_event,
    maxOrNull(occurred_at) AS last_event,
    (SELECT count() FROM xp.rejected_events) AS rejected,
    (SELECT count() FROM xp.duplicates) AS duplicates
FROM xp.events
"""

REJECTIONS_SQL = """
SELECT reason, count() AS messages
FROM xp.rejected_events
GROUP BY reason
ORDER BY messages DESC, reason
"""

FUNNEL_SQL = """
SELECT channel, stage, sum(entries) AS entries, sum(conversions) AS conversions
FROM xp.stage_minute
GROUP BY channel, stage
"""

# seconds_to_convert is NULL for identities first seen after awareness (a
# customer id that appears at login); quantiles skip them, `timed` counts the rest.
TIME_TO_CONVERT_SQL = """
SELECT
    stage,
    count() AS entries,
    count(seconds_to_convert) AS timed,
    quantileExact(0.5)(seconds_to_convert) AS median_s,
    quantileExact(0.9)(seconds_to_convert) AS p90_s
FROM xp.stage_entries
WHERE stage != 'awareness'
GROUP BY stage
"""

SCORES_SQL = """
SELECT
    channel,
    csat_responses,
    round(100 * csat_satisfied / nullIf(csat_responses, 0), 1) AS csat_pct,
    nps_responses,
    round(100 * (toInt64(nps_promoters) - toInt64(nps_detractors))
          / nullIf(nps_responses, 0), 1) AS nps,
    ces_responses,
    round(ces_sum / nullIf(ces_responses, 0), 2) AS ces
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
    GROUP BY channel
)
WHERE csat_responses + nps_responses + ces_responses > 0
ORDER BY channel
"""

SUPPORT_SQL = """
SELECT
    first_responses,
    round(first_response_ms_sum / nullIf(first_responses, 0) / 60000, 1)
        AS mean_first_response_min,
    resolutions,
    round(resolution_ms_sum / nullIf(resolutions, 0) / 60000, 1) AS mean_resolution_min,
    reopens,
    round(100 * reopens / nullIf(resolutions, 0), 1) AS reopen_pct
FROM
(
    SELECT
        sum(first_responses) AS first_responses,
        sum(first_response_ms_sum) AS first_response_ms_sum,
        sum(resolutions) AS resolutions,
        sum(resolution_ms_sum) AS resolution_ms_sum,
        sum(reopens) AS reopens
    FROM xp.experience_minute
)
"""

ERRORS_SQL = """
SELECT
    channel,
    stage,
    events,
    errors,
    crashes,
    round(1000 * (errors + crashes) / nullIf(events, 0), 2) AS errors_per_1000
FROM
(
    SELECT channel, stage, sum(events) AS events
    FROM xp.stage_minute
    GROUP BY channel, stage
) AS volume
LEFT JOIN
(
    SELECT channel, stage, sum(errors) AS errors, sum(crashes) AS crashes
    FROM xp.experience_minute
    GROUP BY channel, stage
) AS failures USING (channel, stage)
WHERE events > 0
"""

CRASH_FREE_SQL = """
SELECT
    channel,
    sessions,
    crash_sessions,
    round(100 * (1 - crash_sessions / nullIf(sessions, 0)), 2) AS crash_free_pct
FROM
(
    SELECT channel, sum(sessions) AS sessions, sum(crash_sessions) AS crash_sessions
    FROM xp.experience_minute
    GROUP BY channel
)
WHERE sessions > 0
ORDER BY channel
"""

VITALS_SQL = """
SELECT
    channel,
    lcp_count,
    round(100 * lcp_good / nullIf(lcp_count, 0), 1) AS lcp_good_pct,
    inp_count,
    round(100 * inp_good / nullIf(inp_count, 0), 1) AS inp_good_pct,
    cls_count,
    round(100 * cls_good / nullIf(cls_count, 0), 1) AS cls_good_pct,
    fcp_count,
    round(100 * fcp_good / nullIf(fcp_count, 0), 1) AS fcp_good_pct,
    ttfb_count,
    round(100 * ttfb_good / nullIf(ttfb_count, 0), 1) AS ttfb_good_pct
FROM
(
    SELECT
        channel,
        sum(lcp_count) AS lcp_count,
        sum(lcp_good) AS lcp_good,
        sum(inp_count) AS inp_count,
        sum(inp_good) AS inp_good,
        sum(cls_count) AS cls_count,
        sum(cls_good) AS cls_good,
        sum(fcp_count) AS fcp_count,
        sum(fcp_good) AS fcp_good,
        sum(ttfb_count) AS ttfb_count,
        sum(ttfb_good) AS ttfb_good
    FROM xp.experience_minute
    GROUP BY channel
)
WHERE lcp_count + inp_count + cls_count + fcp_count + ttfb_count > 0
ORDER BY channel
"""

# Per identity: the bit mask of stages reached, the furthest stage and the time
# of the last stage-entering event (experience signals and NPS scores below the
# advocate threshold enter no stage, so they do not count as activity). An
# identity dropped off at its furthest stage if it has been quiet for the
# inactivity limit, measured against the data's own latest event time so that
# a replay of old data reads the same. Advocacy has no next stage.
DROP_OFF_SQL = f"""
WITH (SELECT max(occurred_at) FROM xp.events) AS latest
SELECT
    {_STAGE_ARRAY}[o] AS stage,
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
        SELECT identity, occurred_at, indexOf({_STAGE_ARRAY}, toString(stage)) AS o
        FROM xp.events
        WHERE type IN ({_ENTERING_TYPES})
           OR (type = 'nps_submitted'
               AND JSONExtractInt(properties, 'score') >= {NPS_ADVOCATE})
    )
    WHERE o > 0
    GROUP BY identity
)
ARRAY JOIN range(1, {len(_JOURNEY)}) AS o
GROUP BY o
ORDER BY o
"""

#: Every query behind the summary, by the section it feeds.
QUERIES: dict[str, str] = {
    "overview": OVERVIEW_SQL,
    "rejections": REJECTIONS_SQL,
    "funnel": FUNNEL_SQL,
    "time_to_convert": TIME_TO_CONVERT_SQL,
    "scores": SCORES_SQL,
    "support": SUPPORT_SQL,
    "errors": ERRORS_SQL,
    "crash_free": CRASH_FREE_SQL,
    "vitals": VITALS_SQL,
    "drop_off": DROP_OFF_SQL,
}

_CHANNELS = ("web", "app", "support")
_DASH = "—"
_BAR_WIDTH = 28
_EIGHTHS = " ▏▎▍▌▋▊▉"


def summary_data(client: Any) -> dict[str, Any]:
    """The summary's numbers as JSON-ready data (`xp demo --json`)."""
    raw = {name: _records(client, sql) for name, sql in QUERIES.items()}
    return {
        "overview": raw["overview"][0] if raw["overview"] else {},
        "rejections": raw["rejections"],
        "funnel": _funnels(raw["funnel"]),
        "time_to_convert": _by_stage(raw["time_to_convert"]),
        "scores": raw["scores"],
        "support": raw["support"][0] if raw["support"] else {},
        "errors": _by_stage(raw["errors"]),
        "crash_free": raw["crash_free"],
        "vitals": raw["vitals"],
        "drop_off": raw["drop_off"],
    }


def render_summary(client: Any) -> str:
    """The summary as plain text, for a terminal of 80 columns."""
    return render(summary_data(client))


def render(data: dict[str, Any]) -> str:
    """Format `summary_data` output; kept apart so the text never needs a database."""
    sections = [
        _render_overview(data["overview"], data["rejections"]),
        _render_funnel(data["funnel"]),
        _render_time_to_convert(data["time_to_convert"]),
        _render_scores(data["scores"]),
        _render_support(data["support"]),
        _render_errors(data["errors"], data["crash_free"]),
        _render_vitals(data["vitals"]),
        _render_drop_off(data["drop_off"]),
    ]
    return "\n\n".join(sections) + "\n"


# --- data -------------------------------------------------------------------


def _records(client: Any, sql: str) -> list[dict[str, Any]]:
    columns, rows = query(client, sql)
    return [{c: _plain(v) for c, v in zip(columns, row, strict=True)} for row in rows]


def _plain(value: Any) -> Any:
    """JSON-ready: times as ISO text, NaN (an empty quantile) as None."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _stage_order(stage: str) -> int:
    return STAGES.index(stage) if stage in STAGES else len(STAGES)


def _by_stage(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        rows, key=lambda r: (_channel_order(r.get("channel", "")), _stage_order(r["stage"]))
    )


def _channel_order(channel: str) -> tuple[int, str]:
    return (_CHANNELS.index(channel) if channel in _CHANNELS else len(_CHANNELS), channel)


def _funnels(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Entries per journey stage for all channels together and for each channel.

    Each identity enters a stage once, in one channel, so the channels' entries
    add up to the total. Step conversion is entries over the previous stage's.
    """
    entries: dict[str, dict[str, int]] = {"all": dict.fromkeys(_JOURNEY, 0)}
    for row in rows:
        if row["stage"] not in _JOURNEY:
            continue
        per_channel = entries.setdefault(row["channel"], dict.fromkeys(_JOURNEY, 0))
        per_channel[row["stage"]] += row["entries"]
        entries["all"][row["stage"]] += row["entries"]
    funnels = {}
    for channel in sorted(entries, key=lambda c: (c != "all", _channel_order(c))):
        counts = entries[channel]
        steps = []
        for i, stage in enumerate(_JOURNEY):
            previous = counts[_JOURNEY[i - 1]] if i else 0
            step = round(100 * counts[stage] / previous, 1) if previous else None
            steps.append({"stage": stage, "entries": counts[stage], "step_pct": step})
        funnels[channel] = steps
    return funnels


# --- text -------------------------------------------------------------------


def _count(value: int | None) -> str:
    return _DASH if value is None else f"{value:,}"


def _fixed(value: float | None, digits: int, suffix: str = "") -> str:
    return _DASH if value is None else f"{float(value):,.{digits}f}{suffix}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return _DASH
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _bar(value: int, largest: int) -> str:
    if largest <= 0 or value <= 0:
        return ""
    eighths = max(1, round(_BAR_WIDTH * 8 * value / largest))
    full, part = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[part] if part else "")


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """Columns padded to their widest cell; the first `left` columns align left."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            cell.ljust(widths[i]) if i < left else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def _title(text: str) -> str:
    return f"{text}\n{'─' * len(text)}"


def _render_overview(overview: dict[str, Any], rejections: list[dict[str, Any]]) -> str:
    lines = [_title("xp summary")]
    first, last = overview.get("first_event"), overview.get("last_event")
    span = f"{first} → {last}" if first and last else _DASH
    lines.append(f"  events stored   {_count(overview.get('events'))}")
    lines.append(f"  identities      {_count(overview.get('identities'))}")
    lines.append(f"  event time      {span}")
    reasons = ", ".join(f"{r['reason']} {r['messages']:,}" for r in rejections)
    rejected = _count(overview.get("rejected"))
    lines.append(f"  rejected        {rejected}" + (f" ({reasons})" if reasons else ""))
    lines.append(f"  duplicates      {_count(overview.get('duplicates'))}")
    return "\n".join(lines)


def _render_funnel(funnels: dict[str, list[dict[str, Any]]]) -> str:
    lines = [_title("Funnel: identities entering each stage, and step conversion")]
    for channel, steps in funnels.items():
        largest = max(s["entries"] for s in steps)
        rows = [
            [
                s["stage"],
                _count(s["entries"]),
                _bar(s["entries"], largest).ljust(_BAR_WIDTH),
                _fixed(s["step_pct"], 1, "%"),
            ]
            for s in steps
        ]
        lines.append(f"  {'all channels' if channel == 'all' else channel}")
        lines.extend(_table(["stage", "entries", "", "step"], rows))
    weakest = _weakest_step(funnels["all"])
    if weakest:
        lines.append(f"  weakest step before conversion: {weakest}")
    return "\n".join(lines)


def _weakest_step(steps: list[dict[str, Any]]) -> str | None:
    """The step before conversion that loses the most people: where a fix pays most.

    Later stages are not a funnel to push people through (fewer support
    contacts is good news), so they are left out.
    """
    measured = [
        (s["step_pct"], i) for i, s in enumerate(steps[:CONVERSION]) if s["step_pct"] is not None
    ]
    if not measured:
        return None
    pct, i = min(measured)
    return f"{steps[i - 1]['stage']} → {steps[i]['stage']}, {pct:.1f}% go on"


def _render_time_to_convert(rows: list[dict[str, Any]]) -> str:
    lines = [_title("Time to convert: from first awareness to entering the stage")]
    found = {r["stage"]: r for r in rows}
    table = []
    for stage in _JOURNEY[1:]:
        row = found.get(stage, {})
        table.append(
            [
                stage,
                _count(row.get("timed")),
                _duration(row.get("median_s")),
                _duration(row.get("p90_s")),
            ]
        )
    lines.extend(_table(["stage", "timed entries", "median", "p90"], table))
    return "\n".join(lines)


def _render_scores(rows: list[dict[str, Any]]) -> str:
    lines = [_title("Experience scores")]
    table = [
        [
            r["channel"],
            _fixed(r["csat_pct"], 1, "%"),
            f"({r['csat_responses']:,})",
            _fixed(r["nps"], 1),
            f"({r['nps_responses']:,})",
            _fixed(r["ces"], 2),
            f"({r['ces_responses']:,})",
        ]
        for r in rows
    ] or [["all", _DASH, "", _DASH, "", _DASH, ""]]
    lines.extend(_table(["channel", "CSAT", "", "NPS", "", "CES (1-7)", ""], table))
    lines.append("  (responses in parentheses; CSAT = share of 4-5, NPS = promoters - detractors)")
    return "\n".join(lines)


def _render_support(row: dict[str, Any]) -> str:
    lines = [_title("Support")]
    first = _fixed(row.get("mean_first_response_min"), 1, " min")
    resolution = _fixed(row.get("mean_resolution_min"), 1, " min")
    lines.append(
        f"  mean first response  {first}  over {_count(row.get('first_responses'))} tickets"
    )
    lines.append(
        f"  mean resolution      {resolution}  over {_count(row.get('resolutions'))} resolutions"
    )
    lines.append(f"  reopen rate          {_fixed(row.get('reopen_pct'), 1, '%')}")
    return "\n".join(lines)


def _render_errors(rows: list[dict[str, Any]], crash_free: list[dict[str, Any]]) -> str:
    lines = [_title("Where errors and crashes happen")]
    table = [
        [
            r["channel"],
            r["stage"],
            _count(r["events"]),
            _count(r["errors"]),
            _count(r["crashes"]),
            _fixed(r["errors_per_1000"], 2),
        ]
        for r in rows
    ] or [[_DASH, _DASH, "0", "0", "0", _DASH]]
    lines.extend(
        _table(["channel", "stage", "events", "errors", "crashes", "per 1,000"], table, left=2)
    )
    sessions = [
        [
            r["channel"],
            _count(r["sessions"]),
            _count(r["crash_sessions"]),
            _fixed(r["crash_free_pct"], 2, "%"),
        ]
        for r in crash_free
    ] or [[_DASH, "0", "0", _DASH]]
    lines.append("")
    lines.extend(_table(["channel", "sessions", "with a crash", "crash-free"], sessions))
    return "\n".join(lines)


def _render_vitals(rows: list[dict[str, Any]]) -> str:
    lines = [_title("Web vitals: share of good experiences")]
    names = ("lcp", "inp", "cls", "fcp", "ttfb")
    table = [
        [r["channel"], *(_fixed(r[f"{n}_good_pct"], 1, "%") for n in names), _count(r["lcp_count"])]
        for r in rows
    ] or [[_DASH, *(_DASH for _ in names), "0"]]
    lines.extend(_table(["channel", *(n.upper() for n in names), "LCP samples"], table))
    return "\n".join(lines)


def _render_drop_off(rows: list[dict[str, Any]]) -> str:
    quiet = DROP_OFF_INACTIVITY_S // 60
    lines = [_title(f"Drop-off: quiet for {quiet} min and never reached the next stage")]
    found = {r["stage"]: r for r in rows}
    table = []
    for stage in _JOURNEY[:-1]:
        row = found.get(stage, {})
        table.append(
            [
                stage,
                _count(row.get("reached")),
                _count(row.get("dropped")),
                _fixed(row.get("dropped_pct"), 1, "%"),
            ]
        )
    lines.extend(_table(["stage", "reached", "dropped", "share"], table))
    return "\n".join(lines)
