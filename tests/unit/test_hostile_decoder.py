"""Hostile input through the real decoder, bulk-stage batches and partition state.

Property tests: hypothesis builds messages from tests/hostile.py, each with the outcome
docs/semantics.md promises, and the tests check that `check`, the `Batcher`, the batch
format and `PartitionState.apply` never raise and give every message exactly that
outcome. The ClickHouse half of the promise is tests/integration/test_hostile_input.py.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import replace

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import validate
from pipeline.batches import BatchWriter, event_record, read_batch, rejected_record
from pipeline.bulk import MAX_BATCH_BYTES
from pipeline.clickhouse import format_table
from pipeline.topics import MAX_MESSAGE_BYTES
from pipeline.validate import Accepted, Rejected, check
from tests import hostile
from tests.hostile import ANY_REASON, MAX_EVENT_BYTES, Case, expected_for, run_cases


def fixed(examples: int) -> settings:
    """Reproducible in CI: the same examples on every run, whatever a local database holds."""
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None)


SALT = 0x5EED
CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def test_the_documented_limits_are_the_decoders() -> None:
    """tests/hostile.py builds its cases around these; they must be the pipeline's own."""
    assert validate.MAX_PROPERTIES_DEPTH == hostile.MAX_PROPERTIES_DEPTH
    assert validate.DEFAULT_MAX_EVENT_BYTES == MAX_EVENT_BYTES
    assert validate.DEFAULT_MAX_CLOCK_SKEW_MS == hostile.MAX_CLOCK_SKEW_MS
    assert set(hostile.STATELESS_REASONS) == set(validate.REASONS) - {"too_late"}


@pytest.mark.parametrize(("family", "kind"), hostile.KINDS)
@fixed(10)
@given(data=st.data())
def test_every_message_gets_the_outcome_the_contract_gives_it(
    family: str, kind: str | None, data: st.DataObject
) -> None:
    """Every kind gets examples of its own: drawn from one pool, rare kinds were never made."""
    case = data.draw(hostile.cases_of(family, kind))
    raw = case.render(SALT)
    result = check(raw, case.received_ms)
    if case.reason is not None:
        assert isinstance(result, Rejected), f"accepted {case.label}"
        if case.reason == ANY_REASON:
            assert result.reason in hostile.STATELESS_REASONS
        else:
            assert result.reason == case.reason, result.detail
        assert result.raw == raw[:MAX_EVENT_BYTES]
        assert result.truncated == (len(raw) > MAX_EVENT_BYTES)
        # The detail goes into the batch header and a String column: short, valid UTF-8.
        assert len(result.detail) <= 300
        result.detail.encode()
        return
    assert isinstance(result, Accepted), f"{case.label}: {getattr(result, 'detail', '')}"
    want = expected_for(case)
    assert result.event_id == case.event_id(SALT)
    assert CANONICAL_UUID.fullmatch(result.event_id)
    assert (result.source, result.type) == (want.source, want.type)
    assert (result.customer_id, result.anonymous_id) == (want.customer_id, want.anonymous_id)
    assert result.session_id == want.session_id
    assert result.properties == want.properties
    assert result.context == want.context
    # The stateful stage stores properties re-encoded: whatever is accepted must encode.
    assert orjson.loads(orjson.dumps(result.properties)) == want.properties


@fixed(40)
@given(st.data())
def test_a_stream_of_hostile_messages_is_accounted_for_exactly_once(data: st.DataObject) -> None:
    cases = data.draw(hostile.case_lists(max_size=10))
    partitions = data.draw(st.integers(1, 3))
    sources = data.draw(st.lists(st.integers(0, 3), min_size=len(cases), max_size=len(cases)))
    run = run_cases(
        cases, salt=SALT, topic="touchpoints", source_partitions=sources, partitions=partitions
    )
    hostile.assert_accounted(run)


@pytest.mark.slow
@fixed(50)
@given(st.data())
def test_long_hostile_streams_are_accounted_for_exactly_once(data: st.DataObject) -> None:
    """The larger run: longer streams, more partitions, more resent events between them."""
    cases = data.draw(hostile.case_lists(max_size=30))
    partitions = data.draw(st.integers(1, 4))
    sources = data.draw(st.lists(st.integers(0, 5), min_size=len(cases), max_size=len(cases)))
    run = run_cases(
        cases, salt=SALT, topic="touchpoints", source_partitions=sources, partitions=partitions
    )
    hostile.assert_accounted(run)


@fixed(20)
@given(st.data())
def test_batches_cut_to_size_keep_every_record_in_order(data: st.DataObject) -> None:
    """With a small size limit most partitions get several batches: none may drop a record.

    The stateful stage skips a record whose offset is not above the highest it applied
    for that source partition, so a cut that put a later offset before an earlier one
    would silently lose the earlier record.
    """
    cases = data.draw(hostile.case_lists(max_size=16))
    sources = data.draw(st.lists(st.integers(0, 1), min_size=len(cases), max_size=len(cases)))
    limit = data.draw(st.integers(min_value=200, max_value=5_000))
    run = run_cases(
        cases,
        salt=SALT,
        topic="touchpoints",
        source_partitions=sources,
        partitions=2,
        max_batch_bytes=limit,
    )
    hostile.assert_accounted(run)
    for _, value in run.batches:
        batch = read_batch(value)
        assert len(value) <= limit or len(batch.events) + len(batch.rejected) == 1


detail_text = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from('\x00\x1f"\\\u2028\U0010ffff'),
    max_size=300,
)


@fixed(100)
@given(
    topic=st.text(min_size=1, max_size=40),
    records=st.lists(
        st.tuples(
            st.booleans(),
            st.integers(-(2**63), 2**63 - 1),
            st.binary(max_size=50),
            detail_text,
        ),
        max_size=10,
    ),
)
def test_a_batch_never_encodes_larger_than_its_bound(
    topic: str, records: list[tuple[bool, int, bytes, str]]
) -> None:
    """The batcher cuts by `size_bound`, so it must hold for the worst headers there are."""
    writer = BatchWriter(topic)
    for is_event, number, raw, text in records:
        if is_event:
            # Every text field as long and as escape-heavy as drawn; properties and
            # context travel as JSON text, escaped a second time inside the header.
            event = Accepted(
                text, text, text, number, number, text, text, text, {text: [text]}, {text: text}
            )
            writer.add_event(event_record(number, number, number, event, raw), raw)
        else:
            record = rejected_record(
                number, number, number, "unknown_schema_version", text, raw, True
            )
            writer.add_rejected(record, raw)
    assert len(writer.encode()) <= writer.size_bound


def test_a_flood_of_huge_messages_still_fits_kafka_messages() -> None:
    """600 messages of about 64 KiB on one partition: 39 MB, over the 16 MiB a message takes.

    Before batches were cut to size, this round of the bulk stage produced one message
    Kafka refused, and the stage failed on the same records after every restart.
    """
    big = replace(hostile.plain_case(0, "same-person", pad=""), size=MAX_EVENT_BYTES - 10)
    too_large = Case("junk", None, "too_large", raw=b"\xff" * (MAX_EVENT_BYTES + 5_000))
    cases = [case for number in range(300) for case in (replace(big, number=number), too_large)]
    run = run_cases(
        cases, salt=SALT, topic="touchpoints", source_partitions=[0] * len(cases), partitions=1
    )
    assert len(run.batches) >= 3
    assert all(len(value) <= MAX_BATCH_BYTES < MAX_MESSAGE_BYTES for _, value in run.batches)
    hostile.assert_accounted(run)


@pytest.mark.parametrize("objects", [False, True])
def test_deep_properties_are_stored_or_rejected_and_never_stop_a_partition(objects: bool) -> None:
    """Nesting either side of every limit on the way: ours (64), orjson's encoder (254)
    and its parser (1,024). An accepted event whose properties the stateful stage could
    not encode again would fail its batch, and so its partition, on every retry."""
    depths = [1, 62, 63, 64, 65, 252, 253, 254, 255, 1021, 1022, 1023, 10_000]
    cases = [
        hostile.with_deep_property(hostile.plain_case(number), depth, objects)
        for number, depth in enumerate(depths)
    ]
    assert [case.reason for case in cases] == [None] * 3 + ["invalid_field"] * 8 + [
        "invalid_json"
    ] * 2
    run = run_cases(cases, salt=SALT, topic="t", source_partitions=[0] * len(cases))
    hostile.assert_accounted(run)


@fixed(100)
@given(st.lists(st.tuples(hostile.hostile_text, st.binary(max_size=20)), max_size=5))
def test_xp_sql_tables_show_hostile_strings_without_control_characters(
    values: list[tuple[str, bytes]],
) -> None:
    """`xp sql` prints stored strings that anyone could send to a person's terminal.

    Escape sequences (`\\x1b[2J` clears the screen, OSC 52 writes the clipboard) and
    carriage returns in a raw payload or context value must arrive escaped, one table
    row per line.
    """
    rows = [*values, ("\x1b[2J\x1b]52;c;cHduZWQ=\x07\r\x9b", b"\x1b\x00")]
    text = format_table(["text", "raw"], rows)
    lines = text.splitlines()
    assert len(lines) == len(rows) + 3  # header, rule, rows, count
    assert not any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text.replace("\n", ""))
    assert "\\x1b[2J\\x1b]52;c;cHduZWQ=\\x07\\r\\x9b" in text
