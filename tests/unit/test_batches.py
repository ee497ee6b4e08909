"""The internal batch format carries raw bytes unchanged, whatever they are."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.batches import E_ID, E_OFFSET, R_REASON, R_TRUNCATED, BatchWriter, read_batch


@given(
    events=st.lists(st.binary(max_size=300), max_size=20),
    rejected=st.lists(st.binary(max_size=300), max_size=20),
)
def test_raw_bytes_and_headers_survive_the_round_trip(
    events: list[bytes], rejected: list[bytes]
) -> None:
    writer = BatchWriter("touchpoints")
    for i, raw in enumerate(events):
        writer.add_event(1, i, 10, 20, f"id-{i}", raw)
    for i, raw in enumerate(rejected):
        writer.add_rejected(2, 100 + i, 10, "invalid_json", "detail", raw, i % 2 == 0)
    batch = read_batch(writer.encode())
    assert batch.topic == "touchpoints"
    assert [raw for _, raw in batch.events] == events
    assert [raw for _, raw in batch.rejected] == rejected
    assert [(h[E_OFFSET], h[E_ID]) for h, _ in batch.events] == [
        (i, f"id-{i}") for i in range(len(events))
    ]
    assert [(h[R_REASON], h[R_TRUNCATED]) for h, _ in batch.rejected] == [
        ("invalid_json", int(i % 2 == 0)) for i in range(len(rejected))
    ]
