"""The journey rules of docs/semantics.md §4-5 on small hand-made sequences."""

from __future__ import annotations

from typing import Any

from pipeline.journey import (
    STAGES,
    Journey,
    Step,
    advance,
    first_response_ms,
    resolution_ms,
    ticket_opened,
)

GAP_MS = 1_800_000


def run(events: list[tuple[str, int, dict[str, Any]]], identity: str = "c1") -> list[Step]:
    journey = Journey()
    return [advance(journey, identity, t, ms, None, props, GAP_MS) for t, ms, props in events]


def stage_names(steps: list[Step]) -> list[str]:
    return [STAGES[s.stage] for s in steps]


def test_funnel_entries_and_conversions_follow_the_highest_stage_before() -> None:
    steps = run(
        [
            ("page_view", 0, {}),
            ("search", 1_000, {}),
            ("page_view", 2_000, {}),
            ("purchase", 3_000, {}),
            ("ticket_opened", 4_000, {}),
        ]
    )
    assert stage_names(steps) == [
        "awareness",
        "consideration",
        "awareness",
        "conversion",
        "service",
    ]
    assert [s.entry for s in steps] == [True, True, False, True, True]
    assert [s.conversion for s in steps] == [False, True, False, True, True]
    assert steps[3].seconds_to_convert == 3.0


def test_skipping_a_stage_is_an_entry_but_not_a_conversion() -> None:
    steps = run([("page_view", 0, {}), ("purchase", 60_000, {})])
    assert steps[1].entry and not steps[1].conversion
    assert steps[1].seconds_to_convert == 60.0


def test_second_purchase_and_promoters_are_advocacy_detractors_are_signals() -> None:
    steps = run(
        [
            ("purchase", 0, {}),
            ("purchase", 10, {}),
            ("nps_submitted", 20, {"score": 9}),
            ("nps_submitted", 30, {"score": 3}),
        ]
    )
    assert stage_names(steps) == ["conversion", "advocacy", "advocacy", "advocacy"]
    assert [s.entry for s in steps] == [True, True, False, False]
    assert steps[0].seconds_to_convert is None


def test_signals_take_the_current_stage_or_none() -> None:
    steps = run(
        [
            ("error", 0, {}),
            ("search", 10, {}),
            ("page_view", 20, {}),
            ("web_vital", 30, {"name": "LCP", "value": 1}),
        ]
    )
    assert stage_names(steps) == ["none", "consideration", "awareness", "awareness"]


def test_sessions_split_after_the_inactivity_gap() -> None:
    steps = run(
        [
            ("page_view", 0, {}),
            ("page_view", GAP_MS, {}),
            ("page_view", 2 * GAP_MS + 1, {}),
            ("page_view", 10, {}),
        ]
    )
    assert [s.session_start for s in steps] == [True, False, True, False]
    assert steps[0].session_id == "c1#0"
    assert steps[2].session_id == steps[3].session_id == f"c1#{2 * GAP_MS + 1}"


def test_client_session_ids_win_over_sessionizing() -> None:
    journey = Journey()
    a = advance(journey, "c", "tap", 0, "s1", {}, GAP_MS)
    b = advance(journey, "c", "tap", 5 * GAP_MS, "s1", {}, GAP_MS)
    c = advance(journey, "c", "tap", 5 * GAP_MS + 1, "s2", {}, GAP_MS)
    assert (a.session_start, b.session_start, c.session_start) == (True, False, True)
    assert c.session_id == "s2"


def test_a_journey_expires_once_its_last_activity_is_before_the_cutoff() -> None:
    journey = Journey()
    assert not journey.expired(10**15)  # nothing happened yet: nothing to expire
    advance(journey, "c", "page_view", 1_000, None, {}, GAP_MS)
    advance(journey, "c", "page_view", 500, None, {}, GAP_MS)  # late: last activity stays
    assert journey.last_ms == 1_000
    assert not journey.expired(1_000)
    assert journey.expired(1_001)


def test_a_ticket_opened_before_the_cutoff_is_forgotten() -> None:
    journey = Journey()
    assert ticket_opened(journey, "T", 1_000, cutoff_ms=0)
    assert not ticket_opened(journey, "T", 2_000, cutoff_ms=0)  # the first opening holds
    assert first_response_ms(journey, "T", 5_000, cutoff_ms=1_000) == 4_000
    assert first_response_ms(journey, "T", 6_000, cutoff_ms=1_000) is None  # once per ticket
    # Past the cutoff the ticket is gone for replies and resolutions alike ...
    assert resolution_ms(journey, "T", 9_000, cutoff_ms=1_001) is None
    assert first_response_ms(journey, "T", 9_000, cutoff_ms=1_001) is None
    # ... and opening it again starts it over, first response included.
    assert ticket_opened(journey, "T", 9_500, cutoff_ms=1_001)
    assert first_response_ms(journey, "T", 9_700, cutoff_ms=1_001) == 200
    assert resolution_ms(journey, "T", 10_500, cutoff_ms=1_001) == 1_000
