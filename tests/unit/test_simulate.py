"""The simulator must only ever produce traffic the pipeline accepts, shaped like a funnel."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from pipeline.simulate import SegmentEffect, SimulationConfig, encode, simulate

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

#: contract.md: the types of each source and the properties each type requires.
TYPES: dict[str, set[str]] = {
    "web": {
        "page_view",
        "click",
        "search",
        "signup",
        "add_to_cart",
        "checkout_started",
        "purchase",
        "web_vital",
        "error",
    },
    "app": {
        "app_install",
        "app_open",
        "screen_view",
        "tap",
        "signup",
        "add_to_cart",
        "checkout_started",
        "purchase",
        "crash",
        "error",
    },
    "support": {
        "ticket_opened",
        "agent_reply",
        "ticket_resolved",
        "ticket_reopened",
        "chat_started",
        "csat_submitted",
        "nps_submitted",
        "ces_submitted",
    },
}
SCORE_RANGES = {"csat_submitted": (1, 5), "nps_submitted": (0, 10), "ces_submitted": (1, 7)}
TICKET_TYPES = {"ticket_opened", "agent_reply", "ticket_resolved", "ticket_reopened"}
VITALS = {"LCP", "INP", "CLS", "FCP", "TTFB"}

#: metrics.md's default journey, written out independently of pipeline.journey.
STAGE_OF = {
    **dict.fromkeys(("page_view", "app_install", "app_open", "screen_view"), "awareness"),
    **dict.fromkeys(("search", "click", "tap", "add_to_cart", "checkout_started"), "consideration"),
    **dict.fromkeys(("signup", "purchase"), "conversion"),
    **dict.fromkeys(
        ("ticket_opened", "chat_started", "agent_reply", "ticket_resolved", "ticket_reopened"),
        "service",
    ),
}


def contract_problems(event: dict[str, Any]) -> list[str]:
    """Every way `event` breaks contract.md; empty when it is valid."""
    problems = []
    try:
        if str(uuid.UUID(event["event_id"])) != event["event_id"]:
            problems.append("event_id not canonical")
    except (KeyError, ValueError, TypeError):
        problems.append("event_id")
    source, event_type = event.get("source"), event.get("type")
    if event_type not in TYPES.get(source, set()):  # type: ignore[arg-type]
        problems.append(f"type {source}/{event_type}")
    try:
        if datetime.fromisoformat(event["occurred_at"]).utcoffset() is None:
            problems.append("occurred_at without offset")
    except (KeyError, ValueError, TypeError):
        problems.append("occurred_at")
    ids = [event.get(k) for k in ("customer_id", "anonymous_id")]
    if not any(ids) or any(i is not None and not 1 <= len(i) <= 128 for i in ids):
        problems.append("ids")
    if not isinstance(event.get("session_id", ""), str):
        problems.append("session_id")
    context = event.get("context", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in context.items()):
        problems.append("context")
    props = event.get("properties", {})
    if not isinstance(props, dict):
        return [*problems, "properties"]
    if event_type in SCORE_RANGES:
        low, high = SCORE_RANGES[event_type]
        score = props.get("score")
        if not (isinstance(score, int) and low <= score <= high):
            problems.append(f"score {score}")
    if event_type == "purchase" and not (
        isinstance(props.get("order_id"), str)
        and isinstance(props.get("revenue"), int | float)
        and props["revenue"] >= 0
        and isinstance(props.get("currency"), str)
    ):
        problems.append("purchase properties")
    if event_type == "web_vital" and not (
        props.get("name") in VITALS and isinstance(props.get("value"), int | float)
    ):
        problems.append("web_vital properties")
    if event_type == "web_vital" and props.get("value", -1) < 0:
        problems.append("web_vital value")
    if event_type == "page_view" and not isinstance(props.get("path"), str):
        problems.append("page_view path")
    if event_type == "screen_view" and not isinstance(props.get("screen"), str):
        problems.append("screen_view screen")
    if event_type in TICKET_TYPES and not isinstance(props.get("ticket_id"), str):
        problems.append("ticket_id")
    if not isinstance(props.get("is_bot", False), bool) or not isinstance(
        props.get("fatal", False), bool
    ):
        problems.append("boolean property")
    if event_type == "add_to_cart" and props.get("value", 0) < 0:
        problems.append("add_to_cart value")
    return problems


def identity(event: dict[str, Any]) -> str:
    return str(event.get("customer_id") or event["anonymous_id"])


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return list(simulate(SimulationConfig(start=START)))


def test_every_event_meets_the_contract(events: list[dict[str, Any]]) -> None:
    assert len(events) > 10_000
    bad = [(e, p) for e in events if (p := contract_problems(e))]
    assert not bad, bad[:3]
    assert len({e["event_id"] for e in events}) == len(events)


def test_the_contract_check_catches_broken_events(events: list[dict[str, Any]]) -> None:
    purchase = next(e for e in events if e["type"] == "purchase")
    nps = next(e for e in events if e["type"] == "nps_submitted")
    assert contract_problems({**purchase, "source": "support"})
    assert contract_problems({**purchase, "properties": {**purchase["properties"], "revenue": -1}})
    assert contract_problems({**nps, "properties": {"score": 11}})
    ids = ("customer_id", "anonymous_id")
    assert contract_problems({k: v for k, v in purchase.items() if k not in ids})


def test_encoded_events_round_trip(events: list[dict[str, Any]]) -> None:
    assert orjson.loads(encode(events[0])) == events[0]


def test_events_are_in_time_order_within_the_span(events: list[dict[str, Any]]) -> None:
    times = [datetime.fromisoformat(e["occurred_at"]) for e in events]
    assert times == sorted(times)
    assert times[0] >= START and times[-1] < START + timedelta(seconds=1800)


def test_every_channel_and_signal_is_present(events: list[dict[str, Any]]) -> None:
    seen = {(e["source"], e["type"]) for e in events}
    expected = {(source, t) for source, types in TYPES.items() for t in types}
    assert seen == expected
    names = {e["properties"]["name"] for e in events if e["type"] == "web_vital"}
    assert names == VITALS


def test_the_funnel_narrows(events: list[dict[str, Any]]) -> None:
    reached: dict[str, set[str]] = defaultdict(set)
    for e in events:
        stage = STAGE_OF.get(e["type"])
        if e["type"] == "nps_submitted" and e["properties"]["score"] >= 9:
            stage = "advocacy"
        if stage:
            reached[stage].add(identity(e))
    sizes = [len(reached[s]) for s in ("awareness", "consideration", "conversion")]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 1.2 * sizes[1] > 2 * sizes[2]
    assert 0 < len(reached["advocacy"]) < len(reached["service"]) < sizes[2]


def test_logins_carry_both_ids(events: list[dict[str, Any]]) -> None:
    both = {e["anonymous_id"] for e in events if e.get("customer_id") and e.get("anonymous_id")}
    anonymous_only = {e["anonymous_id"] for e in events if not e.get("customer_id")}
    assert both & anonymous_only, "some visitors browse anonymously, then log in"


def test_release_5_2_0_crashes_more(events: list[dict[str, Any]]) -> None:
    screens: Counter[str] = Counter()
    crashes: Counter[str] = Counter()
    for e in events:
        if e["type"] in ("screen_view", "crash"):
            counter = screens if e["type"] == "screen_view" else crashes
            counter[e["context"]["app_version"]] += 1
    assert crashes["5.2.0"] / screens["5.2.0"] > 3 * crashes["5.1.3"] / screens["5.1.3"]


def test_a_segment_effect_changes_that_segment() -> None:
    config = SimulationConfig(start=START, customers=1500)
    calm = SegmentEffect("app_version", "5.2.0", {"crash_p": 0.0})
    patched = SimulationConfig(start=START, customers=1500, effects=(*config.effects, calm))
    for run, expected in ((config, True), (patched, False)):
        versions = {e["context"]["app_version"] for e in simulate(run) if e["type"] == "crash"}
        assert ("5.2.0" in versions) is expected


def test_unknown_behavior_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="crash_rate"):
        SegmentEffect("app_version", "5.2.0", {"crash_rate": 2.0})


def test_same_seed_same_events_and_other_seeds_differ() -> None:
    config = SimulationConfig(start=START, customers=300)
    assert list(simulate(config)) == list(simulate(config))
    other = list(simulate(SimulationConfig(start=START, customers=300, seed=8)))
    assert [e["event_id"] for e in other] != [e["event_id"] for e in simulate(config)]


def test_default_start_makes_recent_events() -> None:
    before = datetime.now(UTC)
    first = next(simulate(SimulationConfig(customers=50, duration_s=600)))
    occurred = datetime.fromisoformat(first["occurred_at"])
    assert before - timedelta(seconds=601) <= occurred <= datetime.now(UTC)
