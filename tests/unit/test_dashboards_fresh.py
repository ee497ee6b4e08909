"""The committed Grafana dashboards are exactly what pipeline/panels.py generates.

Grafana provisions the files, while the report and the demo summary run the
queries from code: a panel edited without regenerating would make them disagree.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.dashboards import DASHBOARDS_DIR, dashboard_json, file_name, render, write_dashboards
from pipeline.panels import DASHBOARDS

STALE = "is out of date with pipeline/panels.py: run `xp dashboards` and commit the result"


def test_committed_dashboards_are_fresh() -> None:
    for dashboard in DASHBOARDS:
        path = DASHBOARDS_DIR / file_name(dashboard)
        assert path.is_file(), f"{path.name} is missing: run `xp dashboards` and commit it"
        committed = json.loads(path.read_text(encoding="utf-8"))
        assert committed == dashboard_json(dashboard), (
            f"deploy/grafana/dashboards/{path.name} {STALE}"
        )


def test_no_stale_dashboard_files_are_left_behind() -> None:
    committed = {path.name for path in DASHBOARDS_DIR.glob("*.json")}
    assert committed == {file_name(d) for d in DASHBOARDS}, f"a dashboard file {STALE}"


def test_write_dashboards_writes_the_rendered_text_and_removes_old_files(tmp_path: Path) -> None:
    (tmp_path / "renamed-long-ago.json").write_text("{}")
    written = write_dashboards(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(file_name(d) for d in DASHBOARDS)
    for dashboard, path in zip(DASHBOARDS, written, strict=True):
        assert path.read_text(encoding="utf-8") == render(dashboard)
