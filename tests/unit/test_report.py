"""The report's written summary and HTML, from hand-made numbers (no database).

tests/integration/test_report_in_chromium.py renders a report of pipeline-produced data in
Chromium; these tests pin the wording rules and the edge cases: no data, no
alerts, too little volume to compare, a change that is only noise.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline import charts
from pipeline.panels import TimeRange
from pipeline.report import MIN_VOLUME, Part, ReportData, changes, render, summarize

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
EARLIER = TimeRange(T0, T0 + timedelta(minutes=45) - timedelta(seconds=1))
RECENT = TimeRange(T0 + timedelta(minutes=45), T0 + timedelta(hours=1))


def part(
    time_range: TimeRange,
    entries: tuple[int, int, int],
    csat: tuple[float, int] = (80.0, 200),
    first_response: tuple[float, int] = (4.0, 100),
    failures: tuple[int, int] = (10, 2000),
) -> Part:
    stages = ("awareness", "consideration", "conversion")
    return Part(
        time_range,
        funnel=[
            {"stage": s, "channel": "web", "entries": n, "conversions": 0}
            for s, n in zip(stages, entries, strict=True)
        ],
        scores=[
            {
                "channel": "support",
                "csat_pct": csat[0],
                "csat_responses": csat[1],
                "nps": 20.0,
                "nps_responses": 5,
                "ces": 5.0,
                "ces_responses": 100,
            }
        ],
        support={
            "mean_first_response_min": first_response[0],
            "first_responses": first_response[1],
            "mean_resolution_min": None,
            "resolutions": 0,
        },
        errors=[
            {
                "channel": "web",
                "stage": "awareness",
                "events": failures[1],
                "errors": failures[0],
                "crashes": 0,
            }
        ],
    )


def by_metric(earlier: Part, recent: Part) -> dict[str, Any]:
    return {c.metric: c for c in changes(earlier, recent)}


def test_a_large_drop_is_reported_as_worse_and_noise_is_steady() -> None:
    found = by_metric(
        part(EARLIER, (3000, 2100, 630), csat=(80.0, 300)),
        part(RECENT, (1000, 700, 70), csat=(78.0, 100), first_response=(12.0, 40)),
    )
    conversion = found["consideration → conversion"]
    assert conversion.significant and conversion.z < 0
    assert conversion.sentence() == (
        "Consideration → conversion fell from 30.0% to 10.0% (−20.0 points): worse."
    )
    assert not found["awareness → consideration"].significant  # 70% on both sides
    assert not found["CSAT"].significant  # two points on 100 responses is noise
    slower = found["Mean first response"]
    assert slower.significant
    assert slower.sentence() == "Mean first response rose from 4.0 min to 12.0 min (+200%): worse."


def test_numbers_with_too_little_volume_are_not_compared() -> None:
    found = by_metric(part(EARLIER, (1000, 700, 200)), part(RECENT, (MIN_VOLUME - 1, 10, 3)))
    assert "awareness → consideration" not in found
    assert "NPS" not in found  # five responses on each side
    assert "Mean resolution time" not in found
    assert "CES" in found and "Errors and crashes per 1,000 events" in found


def test_fewer_errors_read_as_better() -> None:
    found = by_metric(
        part(EARLIER, (100, 70, 20), failures=(200, 10_000)),
        part(RECENT, (100, 70, 20), failures=(20, 10_000)),
    )
    fewer = found["Errors and crashes per 1,000 events"]
    assert fewer.significant
    assert fewer.sentence().endswith("(−90%): better.")


def alert(metric: str, minute: int) -> dict[str, Any]:
    return {
        "period_start": T0 + timedelta(minutes=minute),
        "period_end": T0 + timedelta(minutes=minute + 15),
        "metric": metric,
        "channel": "web",
        "stage": "conversion",
        "segment": "country=BR",
        "severity": "critical",
        "observed": 0.1,
        "baseline": 0.3,
        "change": -0.66,
        "resolved": 0,
    }


def report(alerts: list[dict[str, Any]]) -> ReportData:
    steps = ("awareness → consideration", "consideration → conversion", "service → advocacy")
    series = [
        {"time": T0 + timedelta(minutes=m), **{step: 20.0 + m % 7 for step in steps}}
        for m in range(0, 60, 5)
    ]
    minutes = [T0 + timedelta(minutes=m) for m in range(0, 60, 15)]
    return ReportData(
        time_range=TimeRange(T0, T0 + timedelta(hours=1)),
        overview={"events": 1234, "identities": 321},
        funnel=part(EARLIER, (1000, 700, 200)).funnel,
        conversion=series,
        scores_over_time=[{"time": t, "CSAT": 80.0, "NPS": -5.0, "CES": 5.1} for t in minutes],
        support_over_time=[{"time": t, "first response": 4.0, "resolution": 11.0} for t in minutes],
        alerts=alerts,
        earlier=part(EARLIER, (3000, 2100, 630)),
        recent=part(RECENT, (1000, 700, 70)),
    )


def test_summary_leads_with_the_comparison_and_ends_with_the_alerts() -> None:
    summary = summarize(report([alert("conversion", 40), alert("csat", 50)]))
    assert summary.lead.startswith("The last 15 minutes (12:45–13:00 UTC) compared with the 45")
    assert summary.moved[0].startswith("Consideration → conversion fell")
    assert "awareness → consideration" in summary.steady
    assert summary.alerts == (
        "2 alerts fired, marked in red on the charts: 1. conversion on web/conversion "
        "(country=BR), 2. csat on web/conversion (country=BR)."
    )
    assert summarize(report([])).alerts == "No alerts were raised in this period."


def test_alerts_are_marked_on_every_time_chart_and_listed() -> None:
    html = render(report([alert("conversion", 40)]), generated=T0)
    lines = html.count('<svg class="chart" data-chart="line"')
    assert lines == 5  # conversion, CSAT, NPS, CES, support times
    assert html.count('<g class="alert-band">') == lines
    assert "<span class='badge'>1</span>" in html
    assert "−66%" in html


def test_an_empty_period_and_an_empty_database_render_gracefully() -> None:
    quiet = replace(report([]), scores_over_time=[], support_over_time=[])
    html = render(quiet, generated=T0)
    assert "No alerts were raised in this period" in html
    assert html.count("No data in this period.") == 4  # CSAT, NPS, CES and support times
    assert '<g class="alert-band">' not in html
    empty = render(ReportData(time_range=None), generated=T0)
    assert "No data yet" in empty and "<svg" not in empty


def test_line_charts_break_at_missing_values_and_ticks_are_round() -> None:
    points = ((0.0, 1.0), (60.0, 2.0), (120.0, None), (180.0, 3.0), (240.0, 4.0))
    svg = charts.line_chart([charts.Series("s", "#000000", points)], start=0, end=240)
    assert len(re.findall(r'<path class="series"', svg)) == 2
    assert len(re.findall(r"<circle", svg)) == 4
    assert charts.nice_ticks(3.2, 87.0) == [0.0, 25.0, 50.0, 75.0, 100.0]
    assert charts.nice_ticks(4.6, 6.1) == [4.5, 5.0, 5.5, 6.0, 6.5]
    assert charts.time_ticks(90, 3700) == [900.0, 1800.0, 2700.0, 3600.0]
