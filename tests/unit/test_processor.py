"""Partition state: replays change nothing, deltas restore the same state, and it expires."""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from pipeline import journey as jr
from pipeline.batches import E_SIZE, BatchWriter, event_record, rejected_record
from pipeline.clickhouse import Rows
from pipeline.config import Settings
from pipeline.processor import _COUNTED, PartitionState, _count_experience
from pipeline.validate import Accepted
from pipeline.windows import EXPERIENCE_COLUMNS
from pipeline.worker import snapshot_chunks
from schemas import PROPERTIES_MODELS

MINUTE_MS = 60_000
T0 = 1_700_000_000_000 // MINUTE_MS * MINUTE_MS


@dataclass
class Ev:
    """An accepted event as the bulk stage hands it on: what it checked, and the raw bytes."""

    offset: int
    event: Accepted
    raw: bytes


def event(offset: int, identity: str, etype: str, ms: int, **props: Any) -> Ev:
    event_id = str(uuid.UUID(int=offset + 1))
    source = "support" if etype.startswith(("ticket", "agent", "csat")) else "web"
    doc = {"event_id": event_id, "source": source, "type": etype, "customer_id": identity}
    checked = Accepted(event_id, source, etype, ms, ms, identity, None, None, props, {})
    return Ev(offset, checked, orjson.dumps({**doc, "properties": props}))


def batch(
    events: list[Ev],
    rejected: list[tuple[int, str, bytes]] | None = None,
    first_format: bool = False,
) -> bytes:
    writer = BatchWriter("touchpoints")
    for ev in events:
        record = event_record(0, ev.offset, ev.event.received_at_ms, ev.event, ev.raw)
        if first_format:
            record = orjson.dumps(orjson.loads(record)[: E_SIZE + 1])
        writer.add_event(record, ev.raw)
    for offset, reason, raw in rejected or []:
        writer.add_rejected(rejected_record(0, offset, T0, reason, "detail", raw, False), raw)
    return writer.encode()


def new_state() -> PartitionState:
    return PartitionState(0, lateness_s=3600, session_gap_s=1800)


def roundtrip(delta: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(orjson.dumps(delta, option=orjson.OPT_NON_STR_KEYS))
    return loaded


def test_a_replayed_batch_changes_nothing() -> None:
    state = new_state()
    b = batch([event(0, "a", "page_view", T0), event(1, "a", "search", T0 + 1)])
    first = state.apply(b, version=0)
    assert first.accepted == 2 and len(first.rows.events) == 2
    again = state.apply(b, version=1)
    assert again.skipped == 2 and again.accepted == 0
    assert again.rows.count() == 0


def test_duplicates_and_too_late_and_rejected() -> None:
    state = new_state()
    original = event(0, "a", "page_view", T0)
    dup = replace(original, offset=1)
    late = event(3, "b", "page_view", T0 - 3 * 3600_000)
    bad = (4, "invalid_json", b"{")
    out = state.apply(
        batch([original, dup, event(2, "b", "click", T0 + 1), late], [bad]),
        version=0,
    )
    assert (out.accepted, out.duplicates, out.rejected) == (2, 1, 2)
    reasons = sorted(row[1] for row in out.rows.rejected)
    assert reasons == ["invalid_json", "too_late"]
    assert [row[3] for row in out.rows.rejected if row[1] == "invalid_json"] == [b"{"]


def test_window_partial_rows_carry_the_whole_window_state() -> None:
    state = new_state()
    state.apply(batch([event(0, "a", "page_view", T0)]), version=0)
    out = state.apply(batch([event(1, "b", "page_view", T0 + 5)]), version=1)
    (row,) = out.rows.stage_partials
    window_s, channel, stage, events, customers, entries, conversions, partition, version = row
    assert (window_s, channel, stage) == (T0 // 1000, "web", "awareness")
    assert (events, customers, entries, conversions, partition, version) == (2, 2, 2, 0, 0, 1)


def test_support_times_and_scores_are_counted() -> None:
    state = new_state()
    out = state.apply(
        batch(
            [
                event(0, "c", "ticket_opened", T0, ticket_id="t1"),
                event(1, "c", "agent_reply", T0 + 1_000, ticket_id="t1", is_bot=True),
                event(2, "c", "agent_reply", T0 + 5_000, ticket_id="t1"),
                event(3, "c", "agent_reply", T0 + 9_000, ticket_id="t1"),
                event(4, "c", "ticket_resolved", T0 + 20_000, ticket_id="t1"),
                event(5, "c", "csat_submitted", T0 + 21_000, score=4),
            ]
        ),
        version=0,
    )
    (row,) = out.rows.experience_partials
    counts = dict(zip(EXPERIENCE_COLUMNS, row[3:-2], strict=True))
    assert counts["first_responses"] == 1 and counts["first_response_ms_sum"] == 5_000
    assert counts["resolutions"] == 1 and counts["resolution_ms_sum"] == 20_000
    assert counts["csat_responses"] == 1 and counts["csat_satisfied"] == 1
    assert counts["sessions"] == 1


def test_deltas_and_snapshot_chunks_restore_the_same_state() -> None:
    live = new_state()
    deltas = []
    offset = 0
    for minute in range(0, 90, 3):
        events = []
        for i in range(40):
            events.append(event(offset, f"id{i % 13}", "page_view", T0 + minute * MINUTE_MS + i))
            offset += 1
        deltas.append(orjson.loads(live.apply(batch(events), version=minute).delta))

    from_deltas = new_state()
    for delta in deltas:
        from_deltas.apply_delta(delta)
    from_chunks = new_state()
    for chunk in snapshot_chunks(roundtrip(live.snapshot())):
        from_chunks.apply_delta(roundtrip(chunk))

    expected = normalized(live.snapshot())
    assert normalized(from_deltas.snapshot()) == expected
    assert normalized(from_chunks.snapshot()) == expected
    nxt = batch([event(offset, "id1", "search", T0 + 91 * MINUTE_MS)])
    want = live.apply(nxt, 99).rows
    assert from_deltas.apply(nxt, 99).rows == want
    assert from_chunks.apply(nxt, 99).rows == want


def normalized(snapshot: dict[str, Any]) -> dict[str, Any]:
    """Snapshots list windows and seen ids in insertion order, which restoring may change."""
    data = roundtrip(snapshot)
    data["g"] = sorted(data["g"])
    data["s"] = sorted(data["s"])
    return data


def test_a_delta_is_the_state_after_its_own_batch_even_when_stored_later() -> None:
    """Flushes run behind the stream: later batches must not leak into an earlier delta."""
    live = new_state()
    first = live.apply(
        batch([event(0, "a", "ticket_opened", T0, ticket_id="t"), event(1, "a", "crash", T0 + 1)]),
        version=0,
    )
    after_first = normalized(live.snapshot())
    live.apply(
        batch([event(2, "a", "agent_reply", T0 + 2, ticket_id="t"), event(3, "a", "crash", T0)]),
        version=1,
    )
    restored = new_state()
    restored.apply_delta(orjson.loads(first.delta))
    assert normalized(restored.snapshot()) == after_first


# Expiry (docs/semantics.md §4): journeys, tickets and links older than the TTL are forgotten.

HOUR_MS = 3_600_000
TTL_S = 2 * 3600


def ttl_state() -> PartitionState:
    return PartitionState(0, lateness_s=3600, session_gap_s=1800, journey_ttl_s=TTL_S)


def linking(offset: int, customer: str, anonymous: str, etype: str, ms: int) -> Ev:
    """An event carrying both ids: it links the anonymous id to the customer."""
    ev = event(offset, customer, etype, ms)
    doc = {**orjson.loads(ev.raw), "anonymous_id": anonymous}
    return Ev(offset, replace(ev.event, anonymous_id=anonymous), orjson.dumps(doc))


def counts(rows: Rows, stage: str) -> dict[str, int]:
    """The experience counters of the one window row of `stage` in a batch's rows."""
    (row,) = [r for r in rows.experience_partials if r[2] == stage]
    return dict(zip(EXPERIENCE_COLUMNS, row[3:-2], strict=True))


def test_an_identity_inactive_past_the_ttl_starts_a_new_journey() -> None:
    state = ttl_state()
    purchase = {"order_id": "o", "revenue": 1, "currency": "EUR"}
    state.apply(
        batch([event(0, "a", "page_view", T0), event(1, "a", "purchase", T0 + 1000, **purchase)]),
        version=0,
    )
    # Another identity moves the watermark exactly one TTL past a's last activity: a stays.
    state.apply(batch([event(2, "b", "page_view", T0 + 1000 + TTL_S * 1000)]), version=1)
    assert "a" in state.journeys
    # One millisecond more and a is forgotten at the end of the batch, in the delta too.
    out = state.apply(batch([event(3, "b", "page_view", T0 + 1001 + TTL_S * 1000)]), version=2)
    assert "a" not in state.journeys
    assert orjson.loads(out.delta)["jd"] == ["a"]

    back = T0 + 3 * HOUR_MS
    out = state.apply(batch([event(4, "a", "purchase", back, **purchase)]), version=3)
    # As if never seen: the purchase is a first purchase again, entering conversion without
    # converting (nothing before it) and without a time to convert (no awareness), in a new
    # session.
    assert out.rows.stage_entries == [("a", "conversion", "web", back, 0, None)]
    (row,) = out.rows.events
    assert (row[8], row[9]) == (f"a#{back}", "conversion")
    assert counts(out.rows, "conversion")["sessions"] == 1


def test_a_ticket_opened_longer_ago_than_the_ttl_is_forgotten_in_a_live_journey() -> None:
    state = ttl_state()
    state.apply(
        batch(
            [
                event(0, "c", "ticket_opened", T0, ticket_id="t1"),
                event(1, "c", "ticket_opened", T0 + HOUR_MS, ticket_id="t2"),
                event(2, "c", "page_view", T0 + 2 * HOUR_MS),
            ]
        ),
        version=0,
    )
    late = T0 + TTL_S * 1000 + 1
    out = state.apply(
        batch(
            [
                # c is active, but t1 was opened more than the TTL ago: this reply and
                # resolution count nothing ...
                event(3, "c", "agent_reply", late, ticket_id="t1"),
                event(4, "c", "ticket_resolved", late + 1, ticket_id="t1"),
                # ... and opened again, it counts from the new opening.
                event(5, "c", "ticket_opened", late + 10, ticket_id="t1"),
                event(6, "c", "agent_reply", late + 30, ticket_id="t1"),
                event(7, "c", "ticket_resolved", late + 50, ticket_id="t1"),
            ]
        ),
        version=1,
    )
    service = counts(out.rows, "service")
    assert (service["first_responses"], service["first_response_ms_sum"]) == (1, 20)
    assert (service["resolutions"], service["resolution_ms_sum"]) == (1, 40)
    # t2 expires while c stays: the journey without it goes into the delta.
    out = state.apply(batch([event(8, "x", "page_view", T0 + HOUR_MS + TTL_S * 1000 + 1)]), 2)
    assert list(state.journeys["c"].tickets) == ["t1"]
    assert list(orjson.loads(out.delta)["j"]["c"][-1]) == ["t1"]


def test_an_expired_link_is_recorded_again() -> None:
    state = ttl_state()
    out = state.apply(batch([linking(0, "c1", "d1", "signup", T0)]), version=0)
    assert out.rows.identity_links == [("d1", "c1", T0)]
    out = state.apply(batch([linking(1, "c1", "d1", "page_view", T0 + HOUR_MS)]), version=1)
    assert out.rows.identity_links == []  # remembered: not recorded twice
    out = state.apply(batch([event(2, "x", "page_view", T0 + TTL_S * 1000 + 1)]), version=2)
    assert state.linked == {} and orjson.loads(out.delta)["ld"] == ["d1"]
    again = T0 + TTL_S * 1000 + 5
    out = state.apply(batch([linking(3, "c1", "d1", "page_view", again)]), version=3)
    assert out.rows.identity_links == [("d1", "c1", again)]
    assert state.linked == {"d1": again}


def expiring_traffic(seed: int, count: int = 1500) -> list[Ev]:
    """Hours of traffic in which identities pause past the TTL, tickets outlive it and links
    expire; with re-sent events (some after their window closed) and late ones."""
    rng = random.Random(seed)
    out: list[Ev] = []
    t = T0
    types = ["page_view", "search", "purchase", "crash", "ticket_opened", "agent_reply"]
    types += ["ticket_resolved", "csat_submitted"]
    for offset in range(count):
        t += rng.randint(1, 40_000)
        # The population moves on by 10 of 30 identities an hour, and some come back later.
        hour = (t - T0) // HOUR_MS
        low = 0 if rng.random() < 0.2 else 10 * hour
        who = f"id{rng.randint(low, 30 + 10 * hour)}"
        etype = rng.choice(types)
        ms = t - rng.randint(0, 3 * HOUR_MS) if rng.random() < 0.03 else t
        props: dict[str, Any] = {"ticket_id": f"t{rng.randint(0, 3)}"}
        if etype == "purchase":
            props = {"order_id": "o", "revenue": 1, "currency": "EUR"}
        elif etype == "csat_submitted":
            props = {"score": rng.randint(1, 5)}
        if rng.random() < 0.05 and out:
            again = rng.choice(out[-200:])
            out.append(replace(again, offset=offset))
        elif rng.random() < 0.1:
            out.append(linking(offset, who, f"d-{who}", "page_view", ms))
        else:
            out.append(event(offset, who, etype, ms, **props))
    return out


def run_split(events: list[Ev], sizes: list[int]) -> tuple[list[Rows], PartitionState]:
    state = ttl_state()
    outs, i, version = [], 0, 0
    while i < len(events):
        size = sizes[version % len(sizes)]
        outs.append(state.apply(batch(events[i : i + size]), version).rows)
        i += size
        version += 1
    return outs, state


def settled(outs: list[Rows]) -> dict[str, Any]:
    """What the stores hold after these rows: every row, partial rows only the newest."""
    partials: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for rows in outs:
        for row in rows.stage_partials:
            partials[("stage", *row[:3])] = row[3:-1]
        for row in rows.experience_partials:
            partials[("experience", *row[:3])] = row[3:-1]
    return {
        "partials": partials,
        **{
            name: [r for rows in outs for r in getattr(rows, name)]
            for name in ("events", "stage_entries", "identity_links", "duplicates", "rejected")
        },
    }


def test_batches_of_the_first_format_give_the_same_results() -> None:
    """Batches written before the header carried the fields: their raw events give them."""
    events = expiring_traffic(seed=7, count=400)
    got = [(new := ttl_state()).apply(batch(events, first_format=True), 0), new]
    want = [(old := ttl_state()).apply(batch(events), 0), old]
    assert settled([got[0].rows]) == settled([want[0].rows])
    assert orjson.loads(got[0].delta) == orjson.loads(want[0].delta)
    assert normalized(got[1].snapshot()) == normalized(want[1].snapshot())


def test_batch_boundaries_do_not_change_results_or_state() -> None:
    events = expiring_traffic(seed=5)
    whole_rows, whole = run_split(events, [len(events)])
    want = settled(whole_rows)
    assert want["duplicates"] and want["rejected"]  # re-sends and too-late events are there
    # Journeys expired (an identity entered a stage twice) and links were recorded again.
    entered = [(row[0], row[1]) for row in want["stage_entries"]]
    assert len(set(entered)) < len(entered)
    linked = [row[0] for row in want["identity_links"]]
    assert len(set(linked)) < len(linked)
    for sizes in ([1], [7, 1, 120], [400]):
        rows, state = run_split(events, sizes)
        assert settled(rows) == want, sizes
        assert normalized(state.snapshot()) == normalized(whole.snapshot()), sizes


def test_expiry_is_restored_from_deltas_and_snapshots() -> None:
    events = expiring_traffic(seed=8)
    live = ttl_state()
    deltas = []
    for i in range(0, 1200, 50):
        out = live.apply(batch(events[i : i + 50]), version=i)
        deltas.append(roundtrip(orjson.loads(out.delta)))
    assert any(d["jd"] for d in deltas) and any(d["ld"] for d in deltas)
    from_deltas = new_ttl_restored(deltas)
    from_chunks = new_ttl_restored(snapshot_chunks(roundtrip(live.snapshot())))
    expected = normalized(live.snapshot())
    assert normalized(from_deltas.snapshot()) == expected
    assert normalized(from_chunks.snapshot()) == expected
    # The restored states expire the same journeys, tickets and links from here on.
    for i in range(1200, len(events), 100):
        nxt = batch(events[i : i + 100])
        want = live.apply(nxt, i)
        for restored in (from_deltas, from_chunks):
            got = restored.apply(nxt, i)
            assert got.rows == want.rows
            assert expiry_of(got.delta) == expiry_of(want.delta)
    assert normalized(from_deltas.snapshot()) == normalized(live.snapshot())


def new_ttl_restored(deltas: Iterable[dict[str, Any]]) -> PartitionState:
    state = ttl_state()
    for delta in deltas:
        state.apply_delta(delta)
    return state


def expiry_of(delta: bytes) -> tuple[list[str], list[str], dict[str, Any]]:
    """A delta's drops and changed journeys; drops come in heap order, which may differ."""
    data = orjson.loads(delta)
    return sorted(data["jd"]), sorted(data["ld"]), data["j"]


def test_a_resent_event_after_its_window_closed_is_too_late_in_any_batch() -> None:
    """Ids are remembered until their window closes, also when it closes mid-batch."""
    first = event(0, "a", "page_view", T0)
    closer = event(1, "b", "page_view", T0 + MINUTE_MS + 3600_000)
    resent = replace(first, offset=2)
    for split in (
        [[first, closer, resent]],
        [[first], [closer, resent]],
        [[first, closer], [resent]],
    ):
        state = new_state()
        outs = [state.apply(batch(part), version) for version, part in enumerate(split)]
        assert sum(out.duplicates for out in outs) == 0
        assert [row[1] for out in outs for row in out.rows.rejected] == ["too_late"]
        assert first.event.event_id not in state.seen


def test_a_delta_from_before_expiry_restores() -> None:
    """Changelogs written before links expired: bare link ids, no drops."""
    state = ttl_state()
    old = {
        "a": {"0": 4},
        "w": T0,
        "j": {},
        "g": [],
        "gd": [],
        "s": [],
        "sd": [],
        "l": ["d1"],
    }
    state.apply_delta(old)
    assert state.linked == {"d1": T0}  # dated by the delta's watermark
    out = state.apply(batch([event(5, "x", "page_view", T0 + TTL_S * 1000 + 1)]), version=1)
    assert orjson.loads(out.delta)["ld"] == ["d1"]


def test_the_ttl_must_outlast_the_lateness() -> None:
    """Else an event still accepted could be older than the cutoff: expired on arrival."""
    with pytest.raises(ValueError, match="journey_ttl_s"):
        PartitionState(0, lateness_s=3600, session_gap_s=1800, journey_ttl_s=3659)
    with pytest.raises(ValidationError, match="journey_ttl_s"):
        Settings(allowed_lateness_s=3600, journey_ttl_s=3659)
    assert Settings(allowed_lateness_s=3600, journey_ttl_s=3660).journey_ttl_s == 3660


def test_dead_letters_carry_raw_bytes_exactly_even_when_not_utf8() -> None:
    raw = b'{"event_id": "\xff\xfe", "note": "\xc3\x28"}'
    outcome = new_state().apply(batch([], rejected=[(7, "invalid_json", raw)]), 0)
    [(key, letter)] = outcome.dead_letters
    doc = orjson.loads(letter)
    assert key == b"touchpoints:0:7"
    assert doc["reason"] == "invalid_json"
    assert base64.b64decode(doc["raw_base64"]) == raw
    assert "\ufffd" in doc["raw"]


@pytest.mark.parametrize("source_and_type", sorted(PROPERTIES_MODELS))
def test_exactly_the_counted_types_count_experience(
    source_and_type: tuple[str, str],
) -> None:
    """`apply` calls `_count_experience` only for `_COUNTED`: any other type must count nothing."""
    _, type_ = source_and_type
    journey = jr.Journey()
    jr.ticket_opened(journey, "T-1", 1_000, 0)
    props = {"score": 9, "ticket_id": "T-1", "name": "LCP", "value": 1.0, "is_bot": False}
    counters = [0] * len(EXPERIENCE_COLUMNS)
    _count_experience(counters, journey, type_, props, 2_000, 0)
    assert any(counters) == (type_ in _COUNTED)
