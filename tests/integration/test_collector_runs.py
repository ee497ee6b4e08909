"""The commands built on the collector: `xp demo --via http` and `xp loadtest`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.exactness import xp

pytestmark = pytest.mark.integration


def test_demo_via_http_stores_every_simulated_event(tmp_path: Path) -> None:
    out = xp(
        "demo",
        "--via",
        "http",
        "--customers",
        "200",
        "--duration",
        "5",
        "--rate",
        "0",
        "--json",
        "--data-dir",
        str(tmp_path),
        timeout=300,
    )
    run = json.loads(out.strip().splitlines()[-1])["run"]
    # Every line the simulator made went through the collector and was stored.
    assert run["received"] > 500
    assert (run["stored"], run["duplicates"], run["rejected"]) == (run["received"], 0, 0)


def test_loadtest_reports_accepted_events_per_second_and_p99(tmp_path: Path) -> None:
    out = xp(
        "loadtest",
        "--duration",
        "2",
        "--connections",
        "4",
        "--events",
        "20",
        "--json",
        "--data-dir",
        str(tmp_path),
        timeout=120,
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result["requests"] > 0
    assert (result["non_2xx"], result["socket_errors"]) == (0, 0)
    assert result["accepted_eps"] > 0
    assert 0 < result["p50_ms"] <= result["p99_ms"]
