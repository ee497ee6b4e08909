"""The summary printed at the end of `xp demo`, and the same numbers as data.

Every number comes from a Grafana panel's query (pipeline/panels.py) expanded
over all the data and every channel and stage, so the summary, the dashboards
and `xp report` can never disagree about what a number means.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pipeline import panels
from pipeline.clickhouse import query
from pipeline.journey import CONVERSION, STAGES
from pipeline.panels import DROP_OFF_INACTIVITY_S, JOURNEY, VITAL_NAMES

_SECTIONS: dict[str, panels.Panel] = {
    "overview": panels.OVERVIEW,
    "rejections": panels.REJECTIONS,
    "funnel": panels.FUNNEL,
    "time_to_convert": panels.TIME_TO_CONVERT,
    "scores": panels.SCORES,
    "support": panels.SUPPORT,
    "errors": panels.ERRORS,
    "crash_free": panels.CRASH_FREE,
    "vitals": panels.VITALS,
    "drop_off": panels.DROP_OFF,
}

#: Every query behind the summary, by the section it feeds.
QUERIES: dict[str, str] = {
    name: panels.expand(panel.sql, panels.TimeRange.everything(), panels.all_values())
    for name, panel in _SECTIONS.items()
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
    entries: dict[str, dict[str, int]] = {"all": dict.fromkeys(JOURNEY, 0)}
    for row in rows:
        if row["stage"] not in JOURNEY:
            continue
        per_channel = entries.setdefault(row["channel"], dict.fromkeys(JOURNEY, 0))
        per_channel[row["stage"]] += row["entries"]
        entries["all"][row["stage"]] += row["entries"]
    funnels = {}
    for channel in sorted(entries, key=lambda c: (c != "all", _channel_order(c))):
        counts = entries[channel]
        steps = []
        for i, stage in enumerate(JOURNEY):
            previous = counts[JOURNEY[i - 1]] if i else 0
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
    for stage in JOURNEY[1:]:
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
    names = VITAL_NAMES
    table = [
        [
            r["channel"],
            r["stage"],
            *(_fixed(r[f"{n}_good_pct"], 1, "%") for n in names),
            _count(r["lcp_count"]),
        ]
        for r in rows
    ] or [[_DASH, _DASH, *(_DASH for _ in names), "0"]]
    header = ["channel", "stage", *(n.upper() for n in names), "LCP samples"]
    lines.extend(_table(header, table, left=2))
    return "\n".join(lines)


def _render_drop_off(rows: list[dict[str, Any]]) -> str:
    quiet = DROP_OFF_INACTIVITY_S // 60
    lines = [_title(f"Drop-off: quiet for {quiet} min and never reached the next stage")]
    found = {r["stage"]: r for r in rows}
    table = []
    for stage in JOURNEY[:-1]:
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
