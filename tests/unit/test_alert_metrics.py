"""What the worker's /metrics says about experience series, alerts and incoming events."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client import REGISTRY

from pipeline.alerting import Alerting
from pipeline.clickhouse import Rows
from pipeline.config import Settings
from pipeline.drops import Comparison, Episode, Sums, Transition
from pipeline.observability import record_outcome
from pipeline.processor import Outcome

KEY = ("conversion", "web", "consideration")


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def stub_worker() -> Any:
    """Just enough of a Worker for Alerting to register its topic and timer."""
    app = SimpleNamespace(topic=lambda *a, **k: None, timer=lambda *a, **k: lambda fn: fn)
    return SimpleNamespace(app=app)


def event(partition: int, occurred_ms: int, etype: str, props: str = "{}") -> tuple[Any, ...]:
    return (
        "id",
        "support",
        etype,
        occurred_ms,
        occurred_ms,
        "c-1",
        "c-1",
        None,
        "s",
        "service",
        props,
        {},
        "touchpoints",
        partition,
        0,
    )


def test_events_by_source_csat_entries_and_late_events_are_counted() -> None:
    partition, t = 917, 1_700_000_000_000
    before = {
        "in": value("xp_events_in_total", source="support", type="csat_submitted"),
        "responses": value("xp_csat_responses_total", channel="support"),
        "satisfied": value("xp_csat_satisfied_total", channel="support"),
        "entries": value("xp_stage_entries_total", channel="support", stage="service"),
        "late": value("xp_events_late_total"),
    }
    first = Rows(
        events=[event(partition, t, "csat_submitted", '{"score":5}')],
        stage_entries=[("c-1", "service", "support", t, 1, None)],
    )
    record_outcome(Outcome(rows=first, delta={}))
    late = Rows(
        events=[
            event(partition, t - 30_000, "csat_submitted", '{"score":2}'),
            event(partition, t - 90_000, "agent_reply"),
        ]
    )
    record_outcome(Outcome(rows=late, delta={}))
    assert value("xp_events_in_total", source="support", type="csat_submitted") == before["in"] + 2
    assert value("xp_csat_responses_total", channel="support") == before["responses"] + 2
    assert value("xp_csat_satisfied_total", channel="support") == before["satisfied"] + 1
    assert value("xp_stage_entries_total", channel="support", stage="service") == (
        before["entries"] + 1
    )
    assert value("xp_events_late_total") == before["late"] + 1, "only the one 90 s behind"


def test_series_gauges_follow_the_last_evaluation() -> None:
    alerting = Alerting(Settings(), client=None, worker=stub_worker())  # type: ignore[arg-type]
    comparison = Comparison(40.0, 55.0, -0.27, 15.0, 6.0, 1e-9)
    alerting._show_series({KEY: (comparison, 321)})
    labels = dict(zip(("metric", "channel", "stage"), KEY, strict=True))
    assert value("xp_experience_value", **labels) == 40.0
    assert value("xp_experience_baseline", **labels) == 55.0
    assert value("xp_experience_units", **labels) == 321
    alerting._show_series({})
    assert REGISTRY.get_sample_value("xp_experience_value", labels) is None


def test_an_active_alert_is_a_gauge_until_it_resolves() -> None:
    alerting = Alerting(Settings(), client=None, worker=stub_worker())  # type: ignore[arg-type]
    comparison = Comparison(40.0, 55.0, -0.27, 15.0, 6.0, 1e-9)
    episode = Episode(KEY, "a1", 600, Sums(), 0, 300, comparison, 600, "critical")
    episode.segment = "country=BR"
    labels = {
        "metric": KEY[0],
        "channel": KEY[1],
        "stage": KEY[2],
        "severity": "critical",
        "segment": "country=BR",
    }
    fired = value("xp_experience_alerts_total", status="firing")
    alerting._show(Transition("firing", episode, 600, comparison))
    assert value("xp_experience_alert_active", **labels) == 1
    assert value("xp_experience_alerts_total", status="firing") == fired + 1
    episode.segment = "browser=Chrome"  # a sharper attribution replaces the labels
    alerting._show(Transition("firing", episode, 660, comparison))
    assert REGISTRY.get_sample_value("xp_experience_alert_active", labels) is None
    moved = {**labels, "segment": "browser=Chrome"}
    assert value("xp_experience_alert_active", **moved) == 1
    alerting._show(Transition("resolved", episode, 900, comparison))
    assert REGISTRY.get_sample_value("xp_experience_alert_active", moved) is None
