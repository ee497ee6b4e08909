"""Runs every panel's query on one data directory and prints what each returned, as JSON.

A separate process, because chDB opens one data directory per process and the
test session's is another (tests/conftest.py). Usage:
`python -m tests.integration.panel_probe DATA_DIR START END` (ISO 8601 times).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline import clickhouse, panels
from pipeline.panels import TimeRange

#: A narrow selection, to show that every panel applies the variables it uses.
FILTERED = {"channel": ("app",), "stage": ("consideration",)}


def _run(client: Any, sql: str) -> dict[str, Any]:
    """Rows as JSON objects, encoded the way `xp sql --json` encodes them."""
    try:
        columns, rows = clickhouse.query(client, sql)
    except Exception as exc:  # the test names the panel and shows the error
        return {"error": f"{type(exc).__name__}: {exc}", "rows": []}
    lines = clickhouse.format_json_lines(columns, rows).splitlines()
    return {"error": None, "rows": [json.loads(line) for line in lines]}


def probe(data_dir: Path, time_range: TimeRange) -> dict[str, Any]:
    client = clickhouse.connect(None, data_dir)
    values: dict[str, tuple[str, ...]] = dict(panels.all_values())
    segment, segment_value = (v for v in panels.VARIABLES if not v.values)
    keys = _run(client, panels.expand(segment.sql, time_range, values))
    values["segment"] = ("country",)
    found = _run(client, panels.expand(segment_value.sql, time_range, values))
    values["segment_value"] = tuple(r["value"] for r in found["rows"])
    out: dict[str, Any] = {"variables": {"segment": keys, "segment_value": found}, "panels": {}}
    for key, panel in panels.PANELS.items():
        interval = panels.interval_for(panel, time_range)
        source = panels.expand(
            f"SELECT count() AS n FROM {panel.source} WHERE $__timeFilter({panel.time_column})",
            time_range,
        )
        out["panels"][key] = {
            "all": _run(client, panels.expand(panel.sql, time_range, values, interval_s=interval)),
            "filtered": _run(
                client,
                panels.expand(panel.sql, time_range, {**values, **FILTERED}, interval_s=interval),
            ),
            "interval_s": interval,
            "source_rows": _run(client, source)["rows"][0]["n"],
        }
    out["annotations"] = _run(
        client, panels.expand(panels.ALERT_ANNOTATIONS_SQL, time_range, values)
    )
    return out


if __name__ == "__main__":
    directory, start, end = sys.argv[1:4]
    window = TimeRange(datetime.fromisoformat(start), datetime.fromisoformat(end))
    print(json.dumps(probe(Path(directory), window)))
