"""The internal batch format carries raw bytes unchanged, whatever they are."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.batches import (
    E_ANONYMOUS,
    E_ID,
    E_OFFSET,
    E_PROPERTIES,
    R_REASON,
    R_TRUNCATED,
    BatchWriter,
    event_record,
    read_batch,
    rejected_record,
)
from pipeline.validate import Accepted


@given(
    events=st.lists(st.binary(max_size=300), max_size=20),
    rejected=st.lists(st.binary(max_size=300), max_size=20),
)
def test_raw_bytes_and_headers_survive_the_round_trip(
    events: list[bytes], rejected: list[bytes]
) -> None:
    writer = BatchWriter("touchpoints")
    for i, raw in enumerate(events):
        event = Accepted(f"id-{i}", "web", "click", 20, 10, None, f"a{i}", None, {"n": i}, {})
        writer.add_event(event_record(1, i, 10, event, raw), raw)
    for i, raw in enumerate(rejected):
        record = rejected_record(2, 100 + i, 10, "invalid_json", "detail", raw, i % 2 == 0)
        writer.add_rejected(record, raw)
    batch = read_batch(writer.encode())
    assert batch.topic == "touchpoints"
    assert [batch.event_raw(i) for i in range(len(batch.events))] == events
    assert [raw for _, raw in batch.rejected] == rejected
    assert [(h[E_OFFSET], h[E_ID], h[E_ANONYMOUS], h[E_PROPERTIES]) for h in batch.events] == [
        (i, f"id-{i}", f"a{i}", f'{{"n":{i}}}') for i in range(len(events))
    ]
    assert [(h[R_REASON], h[R_TRUNCATED]) for h, _ in batch.rejected] == [
        ("invalid_json", int(i % 2 == 0)) for i in range(len(rejected))
    ]
