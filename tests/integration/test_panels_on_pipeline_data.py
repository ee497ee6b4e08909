"""Every dashboard panel's query, macros expanded, runs on data the real pipeline stored.

The data is simulated traffic run through `xp process` (tests/traffic.py); the
queries run in a subprocess (tests/integration/panel_probe.py) because that data
lives in a chDB directory of its own. A failure names the panel.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline import panels
from tests.traffic import BAD_LINES, Processed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def probed(simulated_traffic: Processed) -> dict[str, Any]:
    traffic = simulated_traffic.traffic
    # Rejected and duplicate messages count by arrival, which is now: the range reaches it.
    end = datetime.now(UTC) + timedelta(minutes=5)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.panel_probe",
            str(simulated_traffic.data_dir),
            traffic.start.isoformat(),
            end.isoformat(),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    result["start"], result["end"] = traffic.start, end
    return result


def _numbers(rows: list[dict[str, Any]], column: str) -> list[float]:
    return [r[column] for r in rows if isinstance(r.get(column), int | float)]


def test_every_panel_runs_and_shows_data_where_its_source_has_some(
    probed: dict[str, Any],
) -> None:
    problems = []
    for key, result in probed["panels"].items():
        for selection in ("all", "filtered"):
            if result[selection]["error"]:
                problems.append(f"{key} ({selection} values): {result[selection]['error']}")
        rows = result["all"]["rows"]
        if result["source_rows"] and not rows:
            problems.append(
                f"{key}: no rows, though {panels.PANELS[key].source} has "
                f"{result['source_rows']} in the range"
            )
        values = [v for r in rows for c, v in r.items() if c != "time" and v is not None]
        if rows and not values:
            problems.append(f"{key}: {len(rows)} rows, every value NULL")
    assert not problems, "\n".join(problems)
    # The simulated traffic has no drop detector behind it: alerts may be empty, never broken.
    assert probed["annotations"]["error"] is None


#: Time series whose columns are shares; stage conversion is not one (support-only
#: customers enter service without converting first), so it may pass 100 %.
SHARES = {"vitals_over_time": ("LCP", "INP", "CLS", "FCP", "TTFB"), "scores_over_time": ("CSAT",)}


def test_shares_and_rates_stay_within_their_bounds(probed: dict[str, Any]) -> None:
    problems = []
    for key, result in probed["panels"].items():
        rows = result["all"]["rows"]
        columns = rows[0].keys() if rows else []
        for column in columns:
            percent = column.endswith("_pct") or column in SHARES.get(key, ())
            bound = 100 if percent else 1000 if column.endswith("_per_1000") else None
            if bound is None:
                continue
            outside = [v for v in _numbers(rows, column) if not 0 <= v <= bound]
            if outside:
                problems.append(f"{key}.{column}: {outside[:5]} outside 0..{bound}")
    assert not problems, "\n".join(problems)


def test_time_series_buckets_lie_in_the_range(probed: dict[str, Any]) -> None:
    for key, result in probed["panels"].items():
        if panels.PANELS[key].kind != "timeseries":
            continue
        step = timedelta(seconds=result["interval_s"])
        times = [datetime.fromisoformat(r["time"]) for r in result["all"]["rows"]]
        assert times == sorted(times), key
        assert all(probed["start"] - step < t <= probed["end"] for t in times), key
        assert all(t.timestamp() % result["interval_s"] == 0 for t in times), key


def test_variables_narrow_every_panel_that_shows_them(probed: dict[str, Any]) -> None:
    for key, result in probed["panels"].items():
        for row in result["filtered"]["rows"]:
            assert row.get("channel", "app") == "app", key
            assert row.get("stage", "consideration") == "consideration", key
    funnel = probed["panels"]["funnel"]["filtered"]["rows"]
    assert funnel and {(r["channel"], r["stage"]) for r in funnel} == {("app", "consideration")}


def test_segment_variables_come_from_the_events_context(probed: dict[str, Any]) -> None:
    variables = probed["variables"]
    keys = {r["segment"] for r in variables["segment"]["rows"]}
    assert {"country", "device", "platform", "app_version"} <= keys
    countries = [r["value"] for r in variables["segment_value"]["rows"]]
    assert "US" in countries and countries == sorted(countries)
    by_country = probed["panels"]["segments"]["all"]["rows"]
    assert {r["value"] for r in by_country} == set(countries)


def test_health_and_journey_panels_count_what_the_pipeline_stored(
    probed: dict[str, Any], simulated_traffic: Processed
) -> None:
    stored = simulated_traffic.summary
    assert stored["received"] == simulated_traffic.traffic.lines
    (overview,) = probed["panels"]["overview"]["all"]["rows"]
    assert overview["events"] == stored["stored"]
    assert overview["rejected"] == stored["rejected"] == len(BAD_LINES)
    assert overview["duplicates"] == stored["duplicates"] == 2
    rejections = probed["panels"]["rejections"]["all"]["rows"]
    assert sum(r["messages"] for r in rejections) == len(BAD_LINES)
    # Entries counted per minute window and per identity agree over the same range.
    entries: dict[str, int] = {}
    for row in probed["panels"]["funnel"]["all"]["rows"]:
        entries[row["stage"]] = entries.get(row["stage"], 0) + row["entries"]
    timed = {r["stage"]: r["entries"] for r in probed["panels"]["time_to_convert"]["all"]["rows"]}
    assert timed == {stage: n for stage, n in entries.items() if stage != "awareness"}
