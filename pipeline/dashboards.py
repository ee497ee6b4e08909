"""Grafana dashboard JSON, generated from the panel definitions in pipeline/panels.py.

The files under deploy/grafana/dashboards/ are this module's output, written
by `xp dashboards` and checked by a test, so a query is edited in one place
and Grafana, `xp report` and the demo summary follow. Grafana provisions the
files read-only: a change made in the UI would be lost on the next deploy,
which is what keeps the code the single source.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.panels import (
    ALERT_ANNOTATIONS_SQL,
    DASHBOARDS,
    VARIABLES,
    Dashboard,
    MetricPanel,
    Panel,
    Variable,
    variables_of,
)

DASHBOARDS_DIR = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards"

#: Datasource uids fixed by deploy/grafana/provisioning/datasources/xp.yml.
CLICKHOUSE = {"type": "grafana-clickhouse-datasource", "uid": "xp-clickhouse"}
PROMETHEUS = {"type": "prometheus", "uid": "xp-prometheus"}

_GRID_WIDTH = 24
_SCHEMA_VERSION = 39
# ClickHouse plugin query formats (sqlds): 0 time series, 1 table.
_TIME_SERIES_FORMAT = 0
_TABLE_FORMAT = 1
_LINES = {"custom": {"lineWidth": 2, "fillOpacity": 6, "showPoints": "never", "spanNulls": True}}
_TIMESERIES_OPTIONS = {
    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
    "tooltip": {"mode": "multi", "sort": "none"},
}


def dashboard_json(dashboard: Dashboard) -> dict[str, Any]:
    """One dashboard as Grafana's JSON model."""
    used: set[str] = set()
    for panel in dashboard.panels:
        if isinstance(panel, Panel):
            used.update(variables_of(panel.sql))
    # A variable whose query needs another one pulls that one in.
    for variable in reversed(VARIABLES):
        if variable.name in used:
            used.update(variables_of(variable.sql))
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["xp"],
        "timezone": "utc",
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": _SCHEMA_VERSION,
        "version": 1,
        "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "links": [
            {
                "type": "dashboards",
                "tags": ["xp"],
                "title": "xp dashboards",
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "annotations": {"list": [_alert_annotation()]},
        "templating": {"list": [_variable(v) for v in VARIABLES if v.name in used]},
        "panels": [
            _panel(panel, number, position)
            for number, (panel, position) in enumerate(_layout(dashboard.panels), start=1)
        ],
    }


def render(dashboard: Dashboard) -> str:
    """The exact text of a dashboard file: stable key order, so diffs show real changes."""
    return json.dumps(dashboard_json(dashboard), indent=2, ensure_ascii=False) + "\n"


def file_name(dashboard: Dashboard) -> str:
    return f"{dashboard.uid}.json"


def write_dashboards(directory: Path = DASHBOARDS_DIR) -> list[Path]:
    """Write every dashboard file and remove the ones no dashboard generates any more."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for dashboard in DASHBOARDS:
        path = directory / file_name(dashboard)
        path.write_text(render(dashboard), encoding="utf-8")
        written.append(path)
    for stale in set(directory.glob("*.json")) - set(written):
        stale.unlink()
    return written


def _layout(
    panels: tuple[Panel | MetricPanel, ...],
) -> list[tuple[Panel | MetricPanel, dict[str, int]]]:
    """Left to right, wrapping to a new row when a panel does not fit."""
    placed = []
    x = y = row_height = 0
    for panel in panels:
        if x + panel.width > _GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        placed.append((panel, {"h": panel.height, "w": panel.width, "x": x, "y": y}))
        x += panel.width
        row_height = max(row_height, panel.height)
    return placed


def _variable(variable: Variable) -> dict[str, Any]:
    common: dict[str, Any] = {
        "name": variable.name,
        "label": variable.label,
        "multi": variable.multi,
        "includeAll": variable.multi,
        "hide": 0,
        "skipUrlSync": False,
    }
    if variable.values:
        options = [{"text": v, "value": v, "selected": False} for v in variable.values]
        return {
            **common,
            "type": "custom",
            "query": ",".join(variable.values),
            "options": options,
            "current": {"text": ["All"], "value": ["$__all"], "selected": True},
        }
    return {
        **common,
        "type": "query",
        "datasource": CLICKHOUSE,
        "query": variable.sql.strip(),
        "definition": variable.sql.strip(),
        "refresh": 2,  # on time range change: the keys are those seen in the range
        "sort": 1,
        "options": [],
        "current": {},
    }


def _alert_annotation() -> dict[str, Any]:
    return {
        "name": "xp alerts",
        "enable": True,
        "hide": False,
        "iconColor": "red",
        "datasource": CLICKHOUSE,
        "target": _target(ALERT_ANNOTATIONS_SQL, _TABLE_FORMAT, "Alerts"),
    }


def _target(sql: str, form: int, ref: str = "A") -> dict[str, Any]:
    return {
        "refId": ref,
        "datasource": CLICKHOUSE,
        "editorType": "sql",
        "format": form,
        "queryType": "timeSeries" if form == _TIME_SERIES_FORMAT else "table",
        "rawSql": sql.strip(),
    }


def _panel(panel: Panel | MetricPanel, number: int, position: dict[str, int]) -> dict[str, Any]:
    common = {"id": number, "title": panel.title, "gridPos": position}
    if isinstance(panel, MetricPanel):
        return {
            **common,
            "description": panel.description,
            "type": "timeseries",
            "datasource": PROMETHEUS,
            "fieldConfig": {"defaults": {"unit": panel.unit, **_LINES}, "overrides": []},
            "options": _TIMESERIES_OPTIONS,
            "targets": [
                {
                    "refId": chr(ord("A") + i),
                    "datasource": PROMETHEUS,
                    "expr": expr,
                    "legendFormat": legend,
                }
                for i, (legend, expr) in enumerate(panel.queries)
            ],
        }
    body: dict[str, Any] = {
        **common,
        # Where the numbers come from, for whoever needs to check one by hand.
        "description": f"{panel.description} Reads {panel.source} by {panel.time_column}.",
        "type": panel.kind,
        "datasource": CLICKHOUSE,
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "targets": [
            _target(panel.sql, _TIME_SERIES_FORMAT if panel.kind == "timeseries" else _TABLE_FORMAT)
        ],
    }
    if panel.kind == "timeseries":
        body["interval"] = f"{panel.min_interval_s // 60}m"
        body["fieldConfig"]["defaults"].update(_LINES)
        body["fieldConfig"]["overrides"] = [
            {
                "matcher": {"id": "byName", "options": name},
                "properties": [{"id": "custom.axisPlacement", "value": "right"}],
            }
            for name in panel.right_axis
        ]
        body["options"] = _TIMESERIES_OPTIONS
    elif panel.kind == "barchart":
        # The query returns (stage, channel, entries) rows; the bars want a
        # column per channel.
        body["transformations"] = [
            {
                "id": "groupingToMatrix",
                "options": {"columnField": "channel", "rowField": "stage", "valueField": "entries"},
            }
        ]
        body["options"] = {
            "orientation": "horizontal",
            "stacking": "normal",
            "showValue": "auto",
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        }
    elif panel.kind == "stat":
        body["options"] = {
            "reduceOptions": {
                "calcs": ["lastNotNull"],
                "fields": "/^(?!first_|last_).*/",
                "values": False,
            },
            "colorMode": "none",
            "graphMode": "none",
            "textMode": "value_and_name",
        }
    else:
        body["options"] = {"showHeader": True, "cellHeight": "sm"}
    return body
