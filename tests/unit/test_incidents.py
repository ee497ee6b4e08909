"""Named incidents of the simulator: one segment misbehaves, and only while they last."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.simulate import DEFAULT_EFFECTS, INCIDENTS, SimulationConfig, incident, simulate

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_an_incident_hits_its_segment_only_within_its_span() -> None:
    crash = incident("app-crash-5.1.3", 1200, 2400)
    config = SimulationConfig(
        customers=3000, duration_s=3600, seed=5, start=START, effects=(*DEFAULT_EFFECTS, crash)
    )
    crashes = {"before": 0, "during": 0, "after": 0}
    for event in simulate(config):
        if event["type"] != "crash" or event["context"].get("app_version") != "5.1.3":
            continue
        offset = datetime.fromisoformat(event["occurred_at"]) - START
        span = "before" if offset < timedelta(seconds=1200) else "during"
        crashes["after" if offset >= timedelta(seconds=2700) else span] += 1
    assert crashes["during"] > 10 * max(1, crashes["before"], crashes["after"]), crashes


def test_every_incident_is_one_known_segment_with_a_story() -> None:
    for name, (story, effect) in INCIDENTS.items():
        assert story and effect.start_s is None, name
        assert incident(name, 60, 120).active(90) and not incident(name, 60, 120).active(120)
    with pytest.raises(ValueError, match="unknown incident"):
        incident("meteor", 0, 60)
