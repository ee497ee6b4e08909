"""`xp bench --workers N`: the scale run measures worker processes and cleans up after them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pipeline.bench import run_scale
from pipeline.config import Settings

pytestmark = pytest.mark.integration


def test_scale_run_measures_each_worker_count_and_keeps_no_tables(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, kafka_bootstrap=None)
    out = asyncio.run(run_scale(settings, events=3_000, customers=300, workers=2))
    assert set(out) == {"1_workers_eps", "2_workers_eps"}
    assert all(eps > 0 for eps in out.values()), out
    # Each worker process had a chDB directory of its own, with a copy of every event.
    left = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert left == [], left
