"""Partition state: replays change nothing and deltas restore the same state."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.batches import BatchWriter
from pipeline.processor import PartitionState
from pipeline.worker import snapshot_chunks

MINUTE_MS = 60_000
T0 = 1_700_000_000_000 // MINUTE_MS * MINUTE_MS


@dataclass
class Ev:
    """An accepted event as the bulk stage hands it on: header fields and raw bytes."""

    offset: int
    ms: int
    event_id: str
    raw: bytes


def event(offset: int, identity: str, etype: str, ms: int, **props: Any) -> Ev:
    event_id = str(uuid.UUID(int=offset + 1))
    source = "support" if etype.startswith(("ticket", "agent", "csat")) else "web"
    doc = {"event_id": event_id, "source": source, "type": etype, "customer_id": identity}
    return Ev(offset, ms, event_id, orjson.dumps({**doc, "properties": props}))


def batch(events: list[Ev], rejected: list[tuple[int, str, bytes]] | None = None) -> bytes:
    writer = BatchWriter("touchpoints")
    for ev in events:
        writer.add_event(0, ev.offset, ev.ms, ev.ms, ev.event_id, ev.raw)
    for offset, reason, raw in rejected or []:
        writer.add_rejected(0, offset, T0, reason, "detail", raw, False)
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
    dup = event(1, "a", "page_view", T0)
    dup.event_id = event(0, "a", "page_view", T0).event_id
    late = event(3, "b", "page_view", T0 - 3 * 3600_000)
    bad = (4, "invalid_json", b"{")
    out = state.apply(
        batch([event(0, "a", "page_view", T0), dup, event(2, "b", "click", T0 + 1), late], [bad]),
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
    from pipeline.windows import EXPERIENCE_COLUMNS

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
