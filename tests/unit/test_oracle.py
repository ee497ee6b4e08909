"""Pins the oracle to docs/semantics.md with tiny inputs whose results were worked out by hand,
and checks that the corpus injects what it claims (the integration test trusts both)."""

from __future__ import annotations

import json
import random
import zlib
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests import corpus as corpus_module
from tests.corpus import make_corpus
from tests.oracle import (
    EXPERIENCE_COLUMNS,
    JOURNEY_TTL_S,
    TYPES,
    Expected,
    Rejected,
    check,
    expected,
)

T0 = 1_740_830_400_000  # 2025-03-01T12:00:00Z in epoch ms
T0_S = T0 // 1000
_SUPPORT = TYPES["support"]
_APP_ONLY = {"app_install", "app_open", "screen_view", "tap", "crash"}


def ts(seconds: float, *, tz: str = "Z") -> str:
    """T0 + `seconds` as RFC 3339 UTC with milliseconds (or a literal offset suffix)."""
    moment = datetime.fromtimestamp(T0 / 1000, UTC) + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}" + tz


_ids = iter(range(1, 1_000_000))


def ev(
    type_: str,
    at: float,
    *,
    customer: str | None = None,
    anon: str | None = None,
    props: dict[str, Any] | None = None,
    source: str | None = None,
    session: str | None = None,
    event_id: str | None = None,
    received: float | None = None,
    sent: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An event at T0 + `at` s, received a second later unless told otherwise."""
    if source is None:
        source = "support" if type_ in _SUPPORT else "app" if type_ in _APP_ONLY else "web"
    body: dict[str, Any] = {
        "event_id": event_id or f"00000000-0000-4000-8000-{next(_ids):012d}",
        "source": source,
        "type": type_,
        "occurred_at": ts(at),
    }
    if customer is not None:
        body["customer_id"] = customer
    if anon is not None:
        body["anonymous_id"] = anon
    if session is not None:
        body["session_id"] = session
    if props is not None:
        body["properties"] = props
    if sent is not None:
        body["sent_at"] = ts(sent)
    body.update(extra)
    body["received_at"] = ts(at + 1 if received is None else received)
    return body


def run(
    tmp_path: Path,
    *items: dict[str, Any] | bytes,
    partitions: int = 4,
    journey_ttl_s: int = JOURNEY_TTL_S,
) -> Expected:
    path = tmp_path / "in.jsonl"
    with path.open("wb") as f:
        for item in items:
            f.write((item if isinstance(item, bytes) else json.dumps(item).encode()) + b"\n")
    return expected(path, partitions=partitions, journey_ttl_s=journey_ttl_s)


def row(events: int, customers: int, entries: int, conversions: int) -> dict[str, int]:
    return {
        "events": events,
        "customers": customers,
        "entries": entries,
        "conversions": conversions,
    }


def exp_row(**counts: int) -> dict[str, int]:
    return {column: counts.get(column, 0) for column in EXPERIENCE_COLUMNS}


PV = {"path": "/"}


# Section 4: journey.


def test_each_stage_in_order_is_an_entry_and_a_conversion(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        ev("page_view", 0, customer="c1", props=PV),
        ev("click", 10, customer="c1"),
        ev("signup", 70, customer="c1"),
        ev("ticket_opened", 80, customer="c1", props={"ticket_id": "T1"}),
        ev("nps_submitted", 130, customer="c1", props={"score": 10}),
    )
    assert out.stage_minute == {
        (T0_S, "web", "awareness"): row(1, 1, 1, 0),
        (T0_S, "web", "consideration"): row(1, 1, 1, 1),
        (T0_S + 60, "web", "conversion"): row(1, 1, 1, 1),
        (T0_S + 60, "support", "service"): row(1, 1, 1, 1),
        (T0_S + 120, "support", "advocacy"): row(1, 1, 1, 1),
    }
    entries = {
        stage: (e["entered_at"], e["converted"], e["seconds_to_convert"])
        for (_, stage), e in out.stage_entries.items()
    }
    assert entries == {
        "awareness": (T0, 0, None),
        "consideration": (T0 + 10_000, 1, 10.0),
        "conversion": (T0 + 70_000, 1, 70.0),
        "service": (T0 + 80_000, 1, 80.0),
        "advocacy": (T0 + 130_000, 1, 130.0),
    }
    assert out.stage_entries[("c1", "service")]["channel"] == "support"


def test_skipping_a_stage_enters_without_converting(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        ev("page_view", 0, customer="c2", props=PV),
        ev(
            "purchase", 5, customer="c2", props={"order_id": "o1", "revenue": 10, "currency": "EUR"}
        ),
        ev(
            "purchase", 10, customer="c2", props={"order_id": "o2", "revenue": 0, "currency": "EUR"}
        ),
        ev("page_view", 15, customer="c2", props=PV),
        ev("error", 20, customer="c2", props={"message": "boom"}),
    )
    # The first purchase enters conversion from awareness (skips consideration); the second
    # enters advocacy from conversion (skips service); the error is in the current stage,
    # awareness again after the second page view, not the highest stage.
    assert out.stage_minute == {
        (T0_S, "web", "awareness"): row(3, 1, 1, 0),
        (T0_S, "web", "conversion"): row(1, 1, 1, 0),
        (T0_S, "web", "advocacy"): row(1, 1, 1, 0),
    }
    assert out.experience_minute == {
        (T0_S, "web", "awareness"): exp_row(errors=1, sessions=1),
    }
    assert [e["stage"] for e in out.events.values()] == [
        "awareness",
        "conversion",
        "advocacy",
        "awareness",
        "awareness",
    ]


def test_second_purchase_after_service_converts_to_advocacy(tmp_path: Path) -> None:
    buy = {"order_id": "o", "revenue": 1.5, "currency": "USD"}
    out = run(
        tmp_path,
        ev("page_view", 0, customer="c3", props=PV),
        ev("purchase", 5, customer="c3", props=buy),
        ev("chat_started", 10, customer="c3"),
        ev("purchase", 15, customer="c3", props=buy),
    )
    assert out.stage_minute[(T0_S, "web", "advocacy")] == row(1, 1, 1, 1)
    assert out.stage_entries[("c3", "advocacy")]["seconds_to_convert"] == 15.0


def test_conversion_compares_with_the_highest_stage_not_the_current_one(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        ev("page_view", 0, customer="c11", props=PV),
        ev("signup", 5, customer="c11"),
        ev("page_view", 10, customer="c11", props=PV),
        ev("chat_started", 15, customer="c11"),  # highest was conversion: converts
        ev("click", 20, customer="c11"),  # highest is service: enters, does not convert
    )
    assert out.stage_minute[(T0_S, "support", "service")] == row(1, 1, 1, 1)
    assert out.stage_minute[(T0_S, "web", "consideration")] == row(1, 1, 1, 0)


def test_nps_nine_enters_advocacy_and_other_scores_take_the_current_stage(
    tmp_path: Path,
) -> None:
    out = run(
        tmp_path,
        ev("nps_submitted", 0, customer="c4", props={"score": 3}),
        ev("nps_submitted", 5, customer="c4", props={"score": 9}),
        ev("nps_submitted", 10, customer="c4", props={"score": 8}),
    )
    assert out.stage_minute == {
        (T0_S, "support", "none"): row(1, 1, 0, 0),
        (T0_S, "support", "advocacy"): row(2, 1, 1, 0),
    }
    assert out.experience_minute == {
        (T0_S, "support", "none"): exp_row(nps_responses=1, nps_detractors=1, sessions=1),
        (T0_S, "support", "advocacy"): exp_row(nps_responses=2, nps_promoters=1),
    }
    # Advocacy entered straight from no stage: no awareness entry, so no time to convert.
    assert out.stage_entries[("c4", "advocacy")]["seconds_to_convert"] is None


def test_time_to_convert_is_clamped_at_zero(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        ev("page_view", 30, anon="a5", props=PV),
        ev("click", 20, anon="a5"),  # arrives later but happened earlier
    )
    assert out.stage_entries[("a5", "consideration")]["seconds_to_convert"] == 0.0
    assert out.stage_entries[("a5", "consideration")]["converted"] == 1


def test_entry_before_awareness_has_no_time_to_convert(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        ev("click", 20, anon="a6"),
        ev("page_view", 10, anon="a6", props=PV),  # arrives after the click
        ev("search", 30, anon="a6"),
    )
    assert out.stage_entries[("a6", "consideration")]["seconds_to_convert"] is None
    assert out.stage_entries[("a6", "consideration")]["converted"] == 0
    # The search is the identity's second consideration event: no entry, no conversion.
    assert out.stage_minute[(T0_S, "web", "consideration")] == row(2, 1, 1, 0)


def test_links_and_identities(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        ev("page_view", 0, anon="a7", props=PV),
        ev("signup", 10, anon="a7", customer="c7"),
        ev("page_view", 20, anon="a7", customer="c7", props=PV),
        ev("page_view", 30, anon="a7", props=PV),
        ev("page_view", 40, anon="a7", customer="c8", props=PV),
    )
    assert out.identity_links == {"a7": "c7"}
    assert out.linked_at == {"a7": T0 + 10_000}
    assert [e["identity"] for e in out.events.values()] == ["a7", "c7", "c7", "a7", "c8"]
    # The customer's signup has no awareness entry of its own: the anonymous page view before
    # the link stays with the anonymous id.
    assert out.stage_entries[("c7", "conversion")]["converted"] == 0
    assert out.stage_minute[(T0_S, "web", "awareness")] == row(4, 3, 3, 0)


# Section 4, expiry: with a TTL of 3,660 s (the least a lateness of 3,600 s allows).

TTL = 3660
BUY = {"order_id": "o-1", "revenue": 10, "currency": "EUR"}


def test_an_identity_inactive_past_the_ttl_starts_over(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        ev("page_view", 0, customer="c", props=PV),
        ev("purchase", 10, customer="c", props=BUY),
        ev("page_view", 3670, anon="other", props=PV),  # c inactive exactly the TTL: kept
        ev("nps_submitted", 3670, customer="c", props={"score": 5}),
        ev("page_view", 7400, anon="other", props=PV),  # c inactive 3,730 s: forgotten
        ev("purchase", 7400.5, customer="c", props=BUY),
        ev("page_view", 7401, customer="c", props=PV),
        partitions=1,
        journey_ttl_s=TTL,
    )
    stages = [e["stage"] for e in out.events.values() if e["identity"] == "c"]
    assert stages == ["awareness", "conversion", "conversion", "conversion", "awareness"]
    # A first purchase again (conversion, without converting or a time to convert), and an
    # awareness entry again: the new journey's entries replace the old ones.
    assert out.stage_entries[("c", "conversion")] == {
        "channel": "web",
        "entered_at": T0 + 7_400_500,
        "converted": 0,
        "seconds_to_convert": None,
    }
    assert out.stage_entries[("c", "awareness")]["entered_at"] == T0 + 7_401_000
    entries: Counter[str] = Counter()
    for (_, _, stage), counts in out.stage_minute.items():
        entries[stage] += counts["entries"]
    # Twice each for c and for `other`, which was inactive as long by 7,400 s.
    assert entries == Counter(awareness=4, conversion=2)
    sessions = {e["session_id"] for e in out.events.values() if e["identity"] == "c"}
    assert sessions == {f"c#{T0}", f"c#{T0 + 3_670_000}", f"c#{T0 + 7_400_500}"}


def test_a_ticket_opened_longer_ago_than_the_ttl_is_forgotten(tmp_path: Path) -> None:
    def t(type_: str, at: float, ticket: str) -> dict[str, Any]:
        return ev(type_, at, customer="c", props={"ticket_id": ticket})

    out = run(
        tmp_path,
        t("ticket_opened", 0, "T1"),
        t("ticket_opened", 1, "T2"),
        ev("page_view", 1800, customer="c", props=PV),  # c stays active
        ev("page_view", 3600, customer="c", props=PV),
        t("agent_reply", 3661, "T1"),  # opened 3,661 s ago: forgotten, counts nothing
        t("agent_reply", 3661, "T2"),  # opened exactly the TTL ago: 3,660 s
        t("ticket_resolved", 3662, "T1"),  # still forgotten
        t("ticket_opened", 3663, "T1"),  # opened anew
        t("agent_reply", 3673, "T1"),
        t("ticket_resolved", 3683, "T1"),
        partitions=1,
        journey_ttl_s=TTL,
    )
    assert out.experience_minute[(T0_S + 3660, "support", "service")] == exp_row(
        first_responses=2,
        first_response_ms_sum=3_660_000 + 10_000,
        resolutions=1,
        resolution_ms_sum=20_000,
    )


def test_an_expired_link_keeps_its_first_record(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        ev("signup", 0, anon="a", customer="c"),
        ev("page_view", 4000, anon="z", props=PV),
        ev("page_view", 4001, anon="a", customer="c", props=PV),  # recorded again, later
        partitions=1,
        journey_ttl_s=TTL,
    )
    assert (out.identity_links, out.linked_at) == ({"a": "c"}, {"a": T0})


# Section 5: sessions.


def test_derived_sessions_split_after_more_than_thirty_minutes(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        ev("page_view", 0, anon="a8", props=PV),
        ev("page_view", 1800, anon="a8", props=PV),  # exactly 1,800 s: same session
        ev("page_view", 3600.001, anon="a8", props=PV),  # 1,800.001 s after: a new one
        ev("web_vital", 100, anon="a8", props={"name": "LCP", "value": 900}),  # arrives late
    )
    sessions = [e["session_id"] for e in out.events.values()]
    first, second = f"a8#{T0}", f"a8#{T0 + 3_600_001}"
    assert sessions == [first, first, second, second]
    assert {k: v["sessions"] for k, v in out.experience_minute.items()} == {
        (T0_S, "web", "awareness"): 1,
        (T0_S + 60, "web", "awareness"): 0,
        (T0_S + 3600, "web", "awareness"): 1,
    }


def test_own_session_ids_start_a_session_whenever_they_change(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        ev("app_open", 0, anon="d1", session="s1"),
        ev("crash", 5, anon="d1", session="s1"),
        ev("app_open", 10, anon="d1", session="s2"),
        ev("crash", 15, anon="d1", session="s2"),
        ev("crash", 20, anon="d1", session="s2"),
        ev("screen_view", 25, anon="d1", session="s1", props={"screen": "home"}),
        ev("crash", 30, anon="d1", session="s1"),
    )
    assert [e["session_id"] for e in out.events.values()][:2] == ["s1", "s1"]
    assert out.experience_minute == {
        (T0_S, "app", "awareness"): exp_row(sessions=3, crashes=4, crash_sessions=2),
    }


# Section 6: ticket times, scores, vitals.


def test_ticket_times(tmp_path: Path) -> None:
    def t(type_: str, at: float, ticket: str, **props: Any) -> dict[str, Any]:
        return ev(type_, at, customer="c9", props={"ticket_id": ticket, **props})

    out = run(
        tmp_path,
        t("ticket_opened", 0, "T1"),
        t("agent_reply", 10, "T1", is_bot=True),
        t("agent_reply", 20, "T2"),  # a ticket never opened
        t("agent_reply", 70, "T1"),  # first human reply: 70 s
        t("agent_reply", 100, "T1", is_bot=False),
        t("ticket_resolved", 130, "T1"),
        t("ticket_reopened", 200, "T1"),
        t("ticket_resolved", 250, "T1"),
        t("ticket_resolved", 255, "T2"),
        t("ticket_opened", 300, "T3"),
        t("agent_reply", 290, "T3", is_bot=False),  # processed after the opening, 10 s before
    )
    assert out.experience_minute == {
        (T0_S, "support", "service"): exp_row(sessions=1),
        (T0_S + 60, "support", "service"): exp_row(first_responses=1, first_response_ms_sum=70_000),
        (T0_S + 120, "support", "service"): exp_row(resolutions=1, resolution_ms_sum=130_000),
        (T0_S + 180, "support", "service"): exp_row(reopens=1),
        (T0_S + 240, "support", "service"): exp_row(
            resolutions=1,
            resolution_ms_sum=250_000,
            first_responses=1,
            first_response_ms_sum=-10_000,
        ),
    }


def test_survey_scores_and_web_vital_thresholds(tmp_path: Path) -> None:
    def vital(name: str, value: float) -> dict[str, Any]:
        return ev("web_vital", 0, anon="a10", props={"name": name, "value": value})

    def score(type_: str, value: int) -> dict[str, Any]:
        return ev(type_, 0, customer="c10", props={"score": value})

    out = run(
        tmp_path,
        *(vital("LCP", v) for v in (2500, 2500.5)),
        *(vital("INP", v) for v in (200, 201)),
        *(vital("CLS", v) for v in (0.1, 0.11, 0)),
        *(vital("FCP", v) for v in (1800, 1801)),
        *(vital("TTFB", v) for v in (800, 800.001)),
        *(score("csat_submitted", v) for v in (5, 4, 3, 1)),
        *(score("ces_submitted", v) for v in (7, 2)),
        *(score("nps_submitted", v) for v in (6, 7, 8)),
    )
    assert out.experience_minute == {
        (T0_S, "web", "none"): exp_row(
            sessions=1,
            lcp_count=2,
            lcp_good=1,
            inp_count=2,
            inp_good=1,
            cls_count=3,
            cls_good=2,
            fcp_count=2,
            fcp_good=1,
            ttfb_count=2,
            ttfb_good=1,
        ),
        (T0_S, "support", "none"): exp_row(
            sessions=1,
            csat_responses=4,
            csat_satisfied=2,
            ces_responses=2,
            ces_sum=9,
            nps_responses=3,
            nps_detractors=1,
        ),
    }


def test_hours_and_days_count_distinct_identities_over_the_period(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        ev("page_view", 0, anon="x", props=PV),
        ev("page_view", 300, anon="x", props=PV),
        ev("page_view", 310, anon="y", props=PV),
        ev("page_view", 3600, anon="x", props=PV),
    )
    assert out.stage_minute[(T0_S + 300, "web", "awareness")] == row(2, 2, 1, 0)
    assert out.stage_hour == {
        (T0_S, "web", "awareness"): row(3, 2, 2, 0),
        (T0_S + 3600, "web", "awareness"): row(1, 1, 0, 0),
    }
    day = T0_S - 12 * 3600
    assert out.stage_day == {(day, "web", "awareness"): row(4, 2, 2, 0)}
    # x's page view at 3,600 s is 3,300 s after its latest: a new session in the next hour.
    assert out.experience_hour == {
        (T0_S, "web", "awareness"): exp_row(sessions=2),
        (T0_S + 3600, "web", "awareness"): exp_row(sessions=1),
    }


# Sections 1 and 3: what is stored, rejected or counted as a duplicate.


def test_stored_columns_are_canonical(tmp_path: Path) -> None:
    line = ev(
        "screen_view",
        0,
        anon="d2",
        props={"screen": "home", "extra": [1, 2]},
        context={"platform": "ios"},
        event_id="0B5F2A4E-8F4C-4E0A-9D6B-3C2F1E0D9C8A",
        session="s9",
    )
    line["occurred_at"] = "2025-03-01T14:00:00.9999+02:00"
    out = run(tmp_path, line)
    assert out.events == {
        "0b5f2a4e-8f4c-4e0a-9d6b-3c2f1e0d9c8a": {
            "source": "app",
            "type": "screen_view",
            "occurred_at": T0 + 999,
            "received_at": T0 + 1000,
            "identity": "d2",
            "customer_id": None,
            "anonymous_id": "d2",
            "session_id": "s9",
            "stage": "awareness",
            "properties": {"screen": "home", "extra": [1, 2]},
            "context": {"platform": "ios"},
        }
    }


def test_clock_skew_correction_and_future_limit(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        # The client clock is an hour ahead: it says 13:00 and sent at 13:00:01, received 12:00:01.
        ev("page_view", 3600, anon="k1", props=PV, sent=3601, received=1),
        ev("page_view", 300, anon="k2", props=PV, received=0),  # 300 s ahead: allowed
        ev("page_view", 300.001, anon="k3", props=PV, received=0),
        # Looks current, but the client clock is 301 s behind.
        ev("page_view", 0, anon="k4", props=PV, sent=-301, received=0),
    )
    assert {e["identity"]: e["occurred_at"] for e in out.events.values()} == {
        "k1": T0,
        "k2": T0 + 300_000,
    }
    assert out.reasons() == Counter(future_timestamp=2)


def test_too_late_at_the_exact_window_close(tmp_path: Path) -> None:
    late = ev("page_view", 59.999, anon="w", props=PV, received=3661)
    out = run(
        tmp_path,
        ev("page_view", 0, anon="w", props=PV),
        ev("page_view", 3659.999, anon="w", props=PV),  # 1 ms before window T0 closes
        ev("page_view", 30, anon="w", props=PV, received=3661),  # still accepted
        ev("page_view", 3660, anon="w", props=PV),  # closes window T0
        late,
        ev("page_view", 60, anon="w", props=PV, received=3661),  # window T0+60 is open
        partitions=1,
    )
    assert out.stored == 5
    assert out.rejected == Counter({(json.dumps(late).encode(), "too_late"): 1})


def test_watermarks_are_per_partition(tmp_path: Path) -> None:
    assert zlib.crc32(b"x1") % 2 != zlib.crc32(b"y1") % 2
    out = run(
        tmp_path,
        ev("page_view", 0, anon="x1", props=PV),
        ev("page_view", 7200, anon="x1", props=PV),
        ev("page_view", 10, anon="y1", props=PV, received=7201),  # y1's partition is at T0
        ev("page_view", 20, anon="x1", props=PV, received=7201),
        partitions=2,
    )
    assert out.stored == 3
    assert out.reasons() == Counter(too_late=1)


def test_duplicates_are_remembered_until_their_window_closes(tmp_path: Path) -> None:
    first = ev("page_view", 0, anon="u", props=PV, event_id="ABCDEF01-0000-4000-8000-000000000001")
    again = {**first, "event_id": first["event_id"].lower(), "properties": {"path": "/other"}}
    out = run(
        tmp_path,
        first,
        again,
        ev("page_view", 3659, anon="u", props=PV),
        again,  # window T0 still open: a duplicate
        ev("page_view", 3660, anon="u", props=PV),
        again,  # window T0 closed, the id is forgotten: too late
        partitions=1,
    )
    assert out.duplicates == 2
    assert out.events["abcdef01-0000-4000-8000-000000000001"]["properties"] == PV
    assert out.reasons() == Counter(too_late=1)
    assert out.received == out.stored + out.duplicates + out.rejected_count == 6


def _reason(body: dict[str, Any] | bytes) -> str | None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        check(raw)
    except Rejected as rejected:
        return rejected.reason
    return None


def _drop(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in keys}


def test_rejection_reasons_and_their_order() -> None:
    pv = ev("page_view", 0, anon="r", props=PV)
    assert _reason(pv) is None
    assert _reason(b"{" + b"x" * 65_536) == "too_large"
    assert _reason(b"\xff\xfe{}") == "invalid_json"
    assert _reason(b"{'a': 1}") == "invalid_json"
    assert _reason(json.dumps(pv).replace('"path"', '"v":NaN,"path"').encode()) == "invalid_json"
    assert _reason(b"[]") == "not_an_object"
    assert _reason(b'"page_view"') == "not_an_object"
    assert _reason(_drop({**pv, "schema_version": 2}, "event_id")) == "unknown_schema_version"
    assert _reason({**pv, "schema_version": 1}) is None
    for key in ("event_id", "source", "type", "occurred_at"):
        assert _reason(_drop({**pv, "type": "nope"}, key)) == "missing_field"
        assert _reason({**pv, key: None}) == "missing_field"
    assert _reason(_drop(pv, "anonymous_id")) == "missing_field"
    assert _reason({**pv, "type": "crash", "event_id": "bad"}) == "unknown_type"
    assert _reason({**pv, "source": "support"}) == "unknown_type"
    assert _reason({**pv, "source": "email", "type": "nope"}) == "invalid_field"
    assert _reason({**pv, "event_id": "bad", "occurred_at": ts(3600)}) == "invalid_field"
    assert _reason({**pv, "occurred_at": ts(3600)}) == "future_timestamp"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"event_id": "0b5f2a4e-8f4c-4e0a-9d6b-3c2f1e0d9c8"}, "invalid_field"),
        ({"occurred_at": "2025-03-01T12:00:00"}, "invalid_field"),
        ({"occurred_at": "2025-03-01T12:00:00+02:00"}, None),
        ({"occurred_at": 1740830400}, "invalid_field"),
        ({"sent_at": "2025-03-01T12:00:00"}, "invalid_field"),
        ({"customer_id": "c" * 128}, None),
        ({"customer_id": "c" * 129}, "invalid_field"),
        ({"customer_id": ""}, "invalid_field"),
        ({"session_id": 7}, "invalid_field"),
        ({"context": {"country": 7}}, "invalid_field"),
        ({"properties": {}}, "invalid_field"),
        ({"properties": {"path": "/", "extra": {"kept": True}}}, None),
        (
            {"type": "csat_submitted", "source": "support", "properties": {"score": 6}},
            "invalid_field",
        ),
        ({"type": "csat_submitted", "source": "support", "properties": {"score": 1}}, None),
        (
            {"type": "nps_submitted", "source": "support", "properties": {"score": 11}},
            "invalid_field",
        ),
        ({"type": "nps_submitted", "source": "support", "properties": {"score": 0}}, None),
        (
            {"type": "ces_submitted", "source": "support", "properties": {"score": 8}},
            "invalid_field",
        ),
        ({"type": "web_vital", "properties": {"name": "FID", "value": 1}}, "invalid_field"),
        ({"type": "web_vital", "properties": {"name": "CLS", "value": -0.1}}, "invalid_field"),
        (
            {"type": "purchase", "properties": {"order_id": "o", "revenue": -1, "currency": "EUR"}},
            "invalid_field",
        ),
    ],
)
def test_field_rules(change: dict[str, Any], reason: str | None) -> None:
    assert _reason({**ev("page_view", 0, anon="r", props=PV), **change}) == reason


def test_event_size_limit_is_inclusive(tmp_path: Path) -> None:
    body = ev("page_view", 0, anon="s", props={"path": ""})
    pad = 65_536 - len(json.dumps(body).encode())
    fits = json.dumps({**body, "properties": {"path": "p" * pad}}).encode()
    over = json.dumps({**body, "properties": {"path": "p" * (pad + 1)}}).encode()
    assert len(fits) == 65_536
    out = run(tmp_path, fits, over)
    assert out.stored == 1
    assert out.rejected == Counter({(over[:65_536], "too_large"): 1})


# Limits of section 1 at their edges, written out by hand: nesting, the end of ClickHouse's
# DateTime and what RFC 8259 excludes. The pipeline's own check must give each line the same
# reason, so a limit changed on one side only shows up here and not just in a slow run.

RECEIVED = ts(1)
END = "2106-02-07T06:28:16.000Z"  # 2**32 s after the epoch, where DateTime ends


def nested(depth: int, objects: bool = False) -> str:
    """`depth` nested arrays, or objects {"d": ...} around a null."""
    if objects:
        return '{"d":' * depth + "null" + "}" * depth
    return "[" * depth + "]" * depth


def line(*, splice: str | None = None, received: str = RECEIVED, **fields: Any) -> bytes:
    """A valid page view received at `received`, `fields` replacing its keys; the JSON text
    `splice` replaces the string "@" wherever a field holds it."""
    body = {**ev("page_view", 0, anon="r", props=PV), **fields, "received_at": received}
    raw = json.dumps(body)
    if splice is not None:
        assert raw.count('"@"') == 1
        raw = raw.replace('"@"', splice)
    return raw.encode()


def prop(splice: str, key: str = "deep") -> bytes:
    """A line whose property `key` is the JSON text `splice`."""
    return line(properties={**PV, key: "@"}, splice=splice)


def late(occurred: str, received: str = END, **fields: Any) -> Any:
    """A line with these times, and the parameters of the two tests for it."""
    return line(occurred_at=occurred, received=received, **fields), received


EDGE_LINES = [
    # Properties are level 1, a property in them level 2.
    pytest.param(prop(nested(63)), RECEIVED, None, id="properties 64 deep"),
    pytest.param(prop(nested(64)), RECEIVED, "invalid_field", id="properties 65 deep"),
    pytest.param(prop(nested(63, True)), RECEIVED, None, id="properties 64 deep, objects"),
    pytest.param(prop(nested(64, True)), RECEIVED, "invalid_field", id="properties 65, objects"),
    pytest.param(prop("[1," + nested(62) + "]"), RECEIVED, None, id="64 through an array"),
    pytest.param(prop("[1," + nested(63) + "]"), RECEIVED, "invalid_field", id="65 in array"),
    pytest.param(prop(nested(254)), RECEIVED, "invalid_field", id="properties 255 deep"),
    pytest.param(prop(nested(1022)), RECEIVED, "invalid_field", id="1,024 in properties"),
    pytest.param(prop(nested(1023)), RECEIVED, "invalid_json", id="1,025 in properties"),
    pytest.param(line(extra="@", splice=nested(200)), RECEIVED, None, id="deep elsewhere"),
    pytest.param(
        line(properties={"path": "[" * 1100 + '\\"' + "{" * 1100}),
        RECEIVED,
        None,
        id="brackets in strings do not nest",
    ),
    pytest.param(nested(1024).encode(), RECEIVED, "not_an_object", id="1,024 arrays"),
    pytest.param(nested(1025).encode(), RECEIVED, "invalid_json", id="1,025 arrays"),
    pytest.param(nested(1024, True).encode(), RECEIVED, "missing_field", id="1,024 objects"),
    pytest.param(nested(1025, True).encode(), RECEIVED, "invalid_json", id="1,025 objects"),
    pytest.param(nested(30_000).encode(), RECEIVED, "invalid_json", id="30,000 arrays"),
    pytest.param(nested(10_000, True).encode(), RECEIVED, "invalid_json", id="10,000 objects"),
    # DateTime ends at END; only a received_at that late lets such a time through.
    pytest.param(*late("2106-02-07T06:28:15.999Z"), None, id="last DateTime millisecond"),
    pytest.param(*late(END), "invalid_field", id="end of DateTime"),
    pytest.param(*late("2106-02-07T06:33:16.001Z"), "future_timestamp", id="future comes first"),
    pytest.param(
        *late("2106-02-07T06:28:00Z", sent_at="2106-02-07T06:27:00Z"),
        "invalid_field",
        id="after DateTime by sent_at",
    ),
    pytest.param(
        *late("2150-01-01T00:00:00Z", "2150-01-01T00:00:01Z"),
        "invalid_field",
        id="received after DateTime",
    ),
    pytest.param(*late(END, session_id=7), "invalid_field", id="bad field after DateTime"),
    # What RFC 8259 and section 1 exclude from JSON.
    pytest.param(b"\xef\xbb\xbf" + line(), RECEIVED, "invalid_json", id="byte order mark"),
    pytest.param(prop("1e400"), RECEIVED, "invalid_json", id="1e400"),
    pytest.param(prop("-1e999"), RECEIVED, "invalid_json", id="-1e999"),
    pytest.param(prop("9" * 400), RECEIVED, "invalid_json", id="integer beyond a double"),
    pytest.param(prop(str(2**64)), RECEIVED, None, id="integer beyond 64 bits"),
    pytest.param(prop('"\\ud800"'), RECEIVED, "invalid_json", id="lone surrogate"),
    pytest.param(
        line(extra={"@": 1}, splice='"\\udfff"'), RECEIVED, "invalid_json", id="lone in a key"
    ),
    pytest.param(prop('"\\ud83d\\ude00"'), RECEIVED, None, id="surrogate pair"),
]


@pytest.mark.parametrize(("raw", "received", "reason"), EDGE_LINES)
def test_limits_of_section_one(raw: bytes, received: str, reason: str | None) -> None:
    assert len(raw) <= 65_536
    assert _reason(raw) == reason


@pytest.mark.parametrize(("raw", "received", "reason"), EDGE_LINES)
def test_the_pipeline_gives_the_edge_lines_the_same_reasons(
    raw: bytes, received: str, reason: str | None
) -> None:
    # Imported here: the oracle and its pins stay independent of the pipeline.
    from pipeline import validate

    received_ms = validate.timestamp_ms(received)
    assert received_ms is not None
    result = validate.check(raw, received_ms)
    assert (result.reason if isinstance(result, validate.Rejected) else None) == reason


# The corpus: it must inject what it reports, and nothing whose outcome depends on partitioning.

START = datetime(2025, 3, 1, 23, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def small_corpus(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[corpus_module.CorpusInfo, Expected]:
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    info = make_corpus(path, lines=6000, seed=11, start=START)
    return info, expected(path)


def test_corpus_is_reproducible(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    make_corpus(a, lines=800, seed=3, start=START)
    make_corpus(b, lines=800, seed=3, start=START)
    make_corpus(c, lines=800, seed=4, start=START)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_corpus_outcomes_match_what_was_injected(
    small_corpus: tuple[corpus_module.CorpusInfo, Expected],
) -> None:
    info, out = small_corpus
    assert out.received == info.lines == 6000
    assert out.stored == info.valid
    assert out.duplicates == info.duplicates == 180
    assert out.reasons() == Counter(info.rejected)
    assert set(info.rejected) == {
        "too_large",
        "invalid_json",
        "not_an_object",
        "unknown_schema_version",
        "missing_field",
        "unknown_type",
        "invalid_field",
        "future_timestamp",
        "too_late",
    }


def test_corpus_covers_every_type_and_signal(
    small_corpus: tuple[corpus_module.CorpusInfo, Expected],
) -> None:
    info, out = small_corpus
    assert {t.split("/")[1] for t in info.types} == set().union(*TYPES.values())
    totals: Counter[str] = Counter()
    for counts in out.experience_minute.values():
        totals.update(counts)
    assert all(totals[c] > 0 for c in EXPERIENCE_COLUMNS if c != "first_response_ms_sum")
    stages = {stage for (_, _, stage) in out.stage_minute}
    assert stages == {"none", "awareness", "consideration", "conversion", "service", "advocacy"}
    assert out.identity_links
    assert info.out_of_order and info.clock_skewed and info.uppercase_ids
    assert any(e["customer_id"] is None for e in out.events.values())


def test_corpus_outcome_does_not_depend_on_partitioning(
    small_corpus: tuple[corpus_module.CorpusInfo, Expected],
) -> None:
    info, out = small_corpus
    assert expected(info.path, partitions=1) == out == expected(info.path, partitions=7)


@pytest.mark.parametrize(("reason", "variant", "make"), corpus_module._INVALID)
def test_every_invalid_variant_has_its_reason(
    reason: str, variant: str, make: Callable[[random.Random, int], bytes]
) -> None:
    assert _reason(make(random.Random(variant), T0 * 1000)) == reason
