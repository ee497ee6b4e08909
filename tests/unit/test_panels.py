"""The panel definitions and their macro expansion, without a database.

tests/integration/test_panels_on_pipeline_data.py runs every query on real data; these tests pin
what the expansion produces (it must match the Grafana plugin's macros) and the
rules every panel follows.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import prometheus_client
import pytest

import pipeline.observability  # noqa: F401  (registers the worker's metrics)
from pipeline import panels
from pipeline.dashboards import CLICKHOUSE, dashboard_json
from pipeline.panels import (
    DASHBOARDS,
    PANELS,
    VARIABLES,
    ExpansionError,
    MetricPanel,
    Panel,
    TimeRange,
    expand,
    interval_for,
    variables_of,
)

RELATIONS_DOC = Path(__file__).resolve().parents[2] / "docs" / "relations.md"
HOUR = TimeRange(datetime(2025, 3, 1, 12, 0, tzinfo=UTC), datetime(2025, 3, 1, 13, 0, tzinfo=UTC))
START, END = 1740830400, 1740834000


def test_time_macros_expand_as_the_plugin_does() -> None:
    sql = "WHERE $__timeFilter(window_start) AND x < $__toTime GROUP BY $__timeInterval( t )"
    assert expand(f"{sql} HAVING y > $__fromTime", HOUR, interval_s=300) == (
        f"WHERE window_start >= toDateTime({START}) AND window_start <= toDateTime({END}) "
        f"AND x < toDateTime({END}) GROUP BY toStartOfInterval(toDateTime(t), INTERVAL 300 second) "
        f"HAVING y > toDateTime({START})"
    )


def test_variables_expand_quoted_and_escaped() -> None:
    values = {"channel": ["web", "o'brien\\"], "plain": ["a", "b"]}
    assert expand("IN (${channel:singlequote}) ${plain}", HOUR, values) == (
        "IN ('web','o\\'brien\\\\') a,b"
    )


@pytest.mark.parametrize(
    ("sql", "values", "message"),
    [
        ("$__timeFilter_ms(t)", {}, "unknown macro"),
        ("$__interval_s", {}, "unknown macro"),
        ("$__timeFilter", {}, "unknown macro"),
        ("${channel:singlequote}", {}, "no value for variable"),
        ("${channel:csv}", {"channel": ["web"]}, "unknown format"),
        ("${channel:singlequote}", {"channel": []}, "has no values"),
    ],
)
def test_what_the_expansion_does_not_know_is_an_error(
    sql: str, values: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(ExpansionError, match=message):
        expand(sql, HOUR, values)


def _public_relations() -> set[str]:
    first_cells = (
        line.split("|")[1]
        for line in RELATIONS_DOC.read_text().splitlines()
        if line.startswith("|")
    )
    return {name for cell in first_cells for name in re.findall(r"`(xp\.\w+)`", cell)}


def _queries() -> dict[str, str]:
    found = {key: panel.sql for key, panel in PANELS.items()}
    found.update({f"variable {v.name}": v.sql for v in VARIABLES if v.sql})
    found["alert annotations"] = panels.ALERT_ANNOTATIONS_SQL
    return found


def test_every_query_reads_only_the_public_views() -> None:
    public = _public_relations()
    assert {"xp.events", "xp.stage_minute", "xp.alerts"} <= public
    for name, sql in _queries().items():
        used = set(re.findall(r"\bxp\.\w+", sql))
        assert used, name
        assert used <= public, f"{name} reads private relations {used - public}"


def test_every_variable_a_query_uses_is_defined_before_the_ones_that_need_it() -> None:
    order = [v.name for v in VARIABLES]
    for name, sql in _queries().items():
        assert set(variables_of(sql)) <= set(order), name
    for variable in VARIABLES:
        for needed in variables_of(variable.sql):
            assert order.index(needed) < order.index(variable.name), variable.name


def test_panel_keys_are_unique_and_every_panel_is_on_a_dashboard() -> None:
    on_dashboards = [p for d in DASHBOARDS for p in d.panels if isinstance(p, Panel)]
    assert len(on_dashboards) == len(PANELS) == len({p.key for p in on_dashboards})


def test_dashboards_carry_their_variables_queries_and_a_tidy_grid() -> None:
    for dashboard in DASHBOARDS:
        model = dashboard_json(dashboard)
        defined = [v["name"] for v in model["templating"]["list"]]
        sql = [p.sql for p in dashboard.panels if isinstance(p, Panel)]
        for query in sql:
            assert set(variables_of(query)) <= set(defined), dashboard.uid
        raw = [
            t["rawSql"]
            for p in model["panels"]
            for t in p["targets"]
            if t["datasource"] == CLICKHOUSE
        ]
        assert raw == [q.strip() for q in sql]
        cells: set[tuple[int, int]] = set()
        for panel in model["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
            area = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not area & cells, f"{panel['title']} overlaps another panel"
            cells |= area
        assert model["annotations"]["list"][0]["target"]["rawSql"] == (
            panels.ALERT_ANNOTATIONS_SQL.strip()
        )


def test_metric_panels_use_metrics_the_workers_export() -> None:
    exported: set[str] = set()
    for family in prometheus_client.REGISTRY.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
        exported.update(family.name + s for s in suffixes.get(family.type, ("",)))
    for dashboard in DASHBOARDS:
        for panel in dashboard.panels:
            if isinstance(panel, MetricPanel):
                for _, expr in panel.queries:
                    used = set(re.findall(r"\bxp_[a-z0-9_]+", expr))
                    assert used and used <= exported, f"{panel.key}: {used - exported}"


def test_intervals_are_whole_minutes_and_respect_each_panel_minimum() -> None:
    day = TimeRange(HOUR.start, HOUR.start + timedelta(days=1))
    assert interval_for(panels.THROUGHPUT, HOUR) == 120  # 3600 s / 48 points, rounded up
    assert interval_for(panels.SCORES_OVER_TIME, HOUR) == 900
    assert interval_for(panels.THROUGHPUT, day) == 1800
    assert interval_for(panels.THROUGHPUT, TimeRange(HOUR.start, HOUR.start)) == 60
