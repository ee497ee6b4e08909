"""Hostile input through the real decoder, partition state and Sink into chDB, and back.

The promise: every message that enters is stored once as an event, counted as a
duplicate, or stored as a rejected event with its reason, and what is stored reads back
byte for byte as it went in: event ids, identities, session ids, properties JSON,
context keys and values, rejection details and raw payloads that are not UTF-8 at all.
SQL and ClickHouse syntax in every string must arrive as data, never as a statement.

The messages come from tests/hostile.py; the unit half of these properties is
tests/unit/test_hostile_decoder.py. Every example writes its own topic and event ids
(the session shares one chDB engine, see tests/conftest.py) and reads only those back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.clickhouse import Sink
from tests import hostile
from tests.hostile import ANY_REASON, MAX_EVENT_BYTES, Case, Run, run_cases

pytestmark = pytest.mark.integration

STORAGE = ("events_store", "rejected_events_store", "duplicates_store")


def fixed(examples: int) -> settings:
    """Reproducible in CI: the same examples on every run, whatever a local database holds."""
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None)


def _bytes(value: Any) -> Any:
    """A value as it went in, with every string as its UTF-8 bytes."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict):
        return {_bytes(k): _bytes(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_bytes(v) for v in value)
    return value


def _select(client: Client, sql: str, topic: str) -> list[tuple[Any, ...]]:
    # Strings as raw bytes: decoding would hide exactly the differences looked for.
    result = client.query(
        sql,
        parameters={"topic": topic},
        query_formats={"String": "bytes", "FixedString": "bytes"},
    )
    return [tuple(_bytes(v) for v in row) for row in result.result_rows]


def store_and_read_back(client: Client, run: Run) -> None:
    """Write the run's rows as the worker does and read every one back unchanged."""
    sink = Sink(client)
    for outcome in run.outcomes:
        sink.write(outcome.rows)

    events = _select(
        client,
        "SELECT partition, offset, event_id, source, type, identity, customer_id, anonymous_id,"
        " session_id, stage, properties, context, toUnixTimestamp64Milli(received_at)"
        " FROM xp.events WHERE topic = {topic:String}",
        run.topic,
    )
    rejected = _select(
        client,
        "SELECT partition, offset, reason, detail, raw, truncated,"
        " toUnixTimestamp64Milli(received_at)"
        " FROM xp.rejected_events WHERE topic = {topic:String}",
        run.topic,
    )
    duplicates = _select(
        client,
        "SELECT partition, offset, event_id FROM xp.duplicates WHERE topic = {topic:String}",
        run.topic,
    )
    places = [row[:2] for row in events + rejected + duplicates]
    assert sorted(places) == sorted(run.places), "a message is missing or stored twice"

    E, R, D = hostile.E, hostile.R, hostile.D
    want_events = {
        (row[E["partition"]], row[E["offset"]]): _bytes(
            (
                row[E["event_id"]],
                row[E["source"]],
                row[E["type"]],
                row[E["identity"]],
                row[E["customer_id"]],
                row[E["anonymous_id"]],
                row[E["session_id"]],
                row[E["stage"]],
                row[E["properties"]],
                # The processor passes the context on as the bulk stage's JSON text.
                json.loads(row[E["context"]]),
                row[E["received_at"]],
            )
        )
        for row in run.rows("events")
    }
    assert {row[:2]: row[2:] for row in events} == want_events
    want_rejected = {
        (row[R["partition"]], row[R["offset"]]): _bytes(
            (
                row[R["reason"]],
                row[R["detail"]],
                row[R["raw"]],
                row[R["truncated"]],
                row[R["received_at"]],
            )
        )
        for row in run.rows("rejected")
    }
    assert {row[:2]: row[2:] for row in rejected} == want_rejected
    want_duplicates = {
        (row[D["partition"]], row[D["offset"]]): (row[D["event_id"]].encode(),)
        for row in run.rows("duplicates")
    }
    assert {row[:2]: row[2:] for row in duplicates} == want_duplicates

    # And against the messages themselves, not only against what the rows said.
    raw_at = dict(zip(run.places, run.raws, strict=True))
    for sp, offset, _reason, _detail, raw, *_ in rejected:
        assert raw == raw_at[sp, offset][:MAX_EVENT_BYTES]


@pytest.mark.parametrize("kinds", hostile.KIND_GROUPS, ids=lambda kinds: str(kinds[0][1]))
@fixed(3)
@given(data=st.data())
def test_every_kind_of_message_is_stored_once_and_read_back_byte_identical(
    chdb_client: Client, kinds: tuple[tuple[str, str | None], ...], data: st.DataObject
) -> None:
    """Every kind of trouble in tests/hostile.py reaches the sink, not only the common ones.

    Among them: Kafka timestamps of -1 and 2**62 ms on rejected rows, properties 63
    levels deep, 64 KiB events, strings of every script and control character.
    """
    cases = data.draw(hostile.one_of_each_kind(kinds))
    sources = data.draw(st.lists(st.integers(0, 2), min_size=len(cases), max_size=len(cases)))
    salt = uuid.uuid4().int >> 40
    run = run_cases(cases, salt=salt, topic=f"kinds-{salt:x}", source_partitions=sources)
    hostile.assert_accounted(run)
    store_and_read_back(chdb_client, run)


@fixed(10)
@given(st.data())
def test_hostile_messages_are_stored_once_and_read_back_byte_identical(
    chdb_client: Client, data: st.DataObject
) -> None:
    cases = data.draw(hostile.case_lists(max_size=8))
    sources = data.draw(st.lists(st.integers(0, 2), min_size=len(cases), max_size=len(cases)))
    salt = uuid.uuid4().int >> 40  # ids no other example (or test) writes
    run = run_cases(cases, salt=salt, topic=f"hostile-{salt:x}", source_partitions=sources)
    hostile.assert_accounted(run)
    store_and_read_back(chdb_client, run)


def test_every_byte_value_and_broken_encoding_survives_as_a_rejected_payload(
    chdb_client: Client,
) -> None:
    """Raw payloads are bytes, not text: not one of them may be decoded, replaced or cut.

    Every byte value on its own and inside a JSON string, UTF-8 that is truncated,
    overlong, a CESU-8 surrogate or past U+10FFFF, and a payload over the size limit
    whose stored copy is cut inside a multi-byte character. Injection strings as whole
    messages must not touch the schema either.
    """
    raws = [bytes([b]) for b in range(256)]
    raws += [b'{"source": "web", "x": "' + bytes([b]) + b'"}' for b in range(0x80, 0x100)]
    raws += [b"\xc3", b"\xe2\x82", b"\xc0\xaf", b"\xed\xa0\x80\xed\xb0\x80", b"\xf4\x90\x80\x80"]
    raws += [b"\xef\xbb\xbf{}", b"\x00" * 1000, b"\r\n", b""]
    raws += [text.encode() for text in hostile.INJECTIONS]
    raws.append(b"\xe2\x82\xac" * (MAX_EVENT_BYTES // 3 + 1))  # cut inside a euro sign
    cases = [Case("bytes", None, ANY_REASON, raw=raw) for raw in raws]
    cases.append(hostile.plain_case(0, "'); DROP TABLE xp.events; --", note="SETTINGS x=1"))
    tables = "SELECT name FROM system.tables WHERE database = 'xp' ORDER BY name"
    before = chdb_client.query(tables).result_rows

    salt = uuid.uuid4().int >> 40
    run = run_cases(
        cases,
        salt=salt,
        topic=f"bytes-{salt:x}",
        source_partitions=[i % 3 for i in range(len(cases))],
    )
    hostile.assert_accounted(run)
    assert sum(o.accepted for o in run.outcomes) == 1
    truncated = [row for row in run.rows("rejected") if row[hostile.R["truncated"]]]
    assert len(truncated) == 1 and truncated[0][hostile.R["reason"]] == "too_large"
    store_and_read_back(chdb_client, run)
    assert chdb_client.query(tables).result_rows == before


# --- end to end: the embedded broker, the bulk stage process, the Faust worker --------

XP = Path(sys.executable).parent / "xp"
#: Where every valid line says an xp edge received it; `xp process` keeps it as the
#: Kafka record timestamp, so event times near it are neither future nor late.
RECEIVED_AT = "2029-03-07T05:11:00Z"


def _xp(*args: str, timeout: float) -> str:
    proc = subprocess.run(
        [str(XP), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "XP_MAX_EVENT_BYTES": str(MAX_EVENT_BYTES)},
        check=False,
    )
    assert proc.returncode == 0, f"xp {args[0]} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


def _sql(data_dir: Path, query: str) -> list[dict[str, Any]]:
    out = _xp("sql", "--data-dir", str(data_dir), "--json", query, timeout=300)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _stamped(case: Case) -> Case:
    """`case` carrying the backfill `received_at` that `xp process` reads from a line."""
    assert type(case.doc) is dict
    return replace(case, doc={**case.doc, "received_at": RECEIVED_AT})


def _file_corpus() -> list[Case]:
    """Hostile lines for a JSONL file: every kind of trouble, none that splits a line.

    A file carries no newline inside a message and `xp process` skips blank lines, so
    raw bytes here avoid b"\\n", a trailing b"\\r" and whitespace-only lines.
    """
    cases: list[Case] = []
    strings = [s for s in (*hostile.INJECTIONS, *hostile.UNICODE_EDGES) if s]
    for text in strings:
        case = hostile.plain_case(len(cases), text[:128], **{text: text, "path": text})
        doc = {**case.doc, "session_id": text, "context": {text: text, "k": text}}
        assert case.expected is not None
        expected = replace(case.expected, session_id=text, context=doc["context"])
        cases.append(_stamped(replace(case, doc=doc, expected=expected, label=repr(text))))
    for depth in (63, 64, 254, 1023):
        cases.append(
            _stamped(hostile.with_deep_property(hostile.plain_case(len(cases)), depth, False))
        )
    valid = _stamped(hostile.plain_case(len(cases), "resender"))
    upper = {**valid.doc, "event_id": hostile.EventId("upper")}
    cases += [valid, valid, replace(valid, doc=upper)]  # the same event three times
    broken = hostile.plain_case(len(cases))
    for field, value, reason in [
        ("event_id", 5, "invalid_field"),
        ("event_id", "'); DROP TABLE xp.events; --", "invalid_field"),
        ("schema_version", 2, "unknown_schema_version"),
        ("source", "SETTINGS max_threads=1", "invalid_field"),
        ("type", "{name:String}", "unknown_type"),
        ("customer_id", "c" * 129, "invalid_field"),
        ("context", {"k": 1}, "invalid_field"),
        ("occurred_at", None, "missing_field"),
    ]:
        doc = {**broken.doc, field: value}
        cases.append(_stamped(replace(broken, doc=doc, reason=reason, expected=None)))
    # A forged backfill time late enough to let a 2200 event past the skew check.
    late = {
        **broken.doc,
        "occurred_at": "2200-01-01T00:00:00Z",
        "received_at": "2200-01-01T00:00:00Z",
    }
    cases.append(replace(broken, doc=late, reason="invalid_field", expected=None))
    note = hostile.Verbatim
    for label, value, reason in [
        ("lone surrogate", note(rb'"\ud800"'), "invalid_json"),
        ("bad utf-8", note(b'"\xff\xc3"'), "invalid_json"),
        ("NaN", note(b"NaN"), "invalid_json"),
        ("raw NUL", note(b'"a\x00b"'), "invalid_json"),
    ]:
        case = _stamped(replace(broken, doc={**broken.doc, "properties": {"n": value}}))
        cases.append(replace(case, label=label, reason=reason, expected=None))
    cases += [
        replace(_stamped(broken), label="BOM", prefix=b"\xef\xbb\xbf", reason="invalid_json"),
        replace(_stamped(broken), label="cut", cut=40, reason="invalid_json"),
        replace(_stamped(broken), label="trailing", suffix=b"}", reason="invalid_json"),
    ]
    for raw, reason in [
        (b"\x00\xff\xfe garbage \x80", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b"123456789012345678901234567890", "not_an_object"),
        (b'"\xe2\x80\xae"', "not_an_object"),
        (b"\xe2\x82\xac" * 30_000, "too_large"),
    ]:
        cases.append(Case("bytes", None, reason, raw=raw))
    return cases


@pytest.mark.slow
def test_xp_process_accounts_for_every_hostile_line(tmp_path: Path) -> None:
    """The whole embedded pipeline, from a file of hostile lines to rows read back as hex.

    `xp process` keys lines by identity and stamps the backfill `received_at`, the bulk
    stage runs in a process of its own, the worker stores through the Sink into chDB:
    nothing is faked. Bytes are compared as hex so that no decoding can hide a change.
    """
    salt = uuid.uuid4().int >> 40
    cases = _file_corpus()
    raws = [case.render(salt) for case in cases]
    assert not any(b"\n" in raw or raw.endswith(b"\r") or not raw.strip() for raw in raws)
    corpus = tmp_path / "hostile.jsonl"
    corpus.write_bytes(b"".join(raw + b"\n" for raw in raws))
    data_dir = tmp_path / "data"

    out = _xp("process", str(corpus), "--data-dir", str(data_dir), "--json", timeout=240)
    summary = json.loads(out.strip().splitlines()[-1])
    accepted = {case.event_id(salt): case for case in cases if case.reason is None}
    rejected = [
        (c.reason, r[:MAX_EVENT_BYTES]) for c, r in zip(cases, raws, strict=True) if c.reason
    ]
    assert summary["received"] == len(cases)
    assert (summary["stored"], summary["duplicates"], summary["rejected"]) == (
        len(accepted),
        len(cases) - len(accepted) - len(rejected),
        len(rejected),
    )

    rows = _sql(data_dir, "SELECT reason, hex(raw) AS raw, truncated FROM xp.rejected_events")
    assert sorted((row["reason"], bytes.fromhex(row["raw"])) for row in rows) == sorted(rejected)
    assert [row["truncated"] for row in rows].count(1) == 1

    rows = _sql(
        data_dir,
        "SELECT event_id, hex(customer_id) AS customer, hex(session_id) AS session,"
        " hex(properties) AS properties, arrayMap(x -> hex(x), mapKeys(context)) AS keys,"
        " arrayMap(x -> hex(x), mapValues(context)) AS values FROM xp.events",
    )
    assert sorted(row["event_id"] for row in rows) == sorted(accepted)
    for row in rows:
        want = hostile.expected_for(accepted[row["event_id"]])
        assert bytes.fromhex(row["customer"]).decode() == want.customer_id
        if want.session_id is not None:
            assert bytes.fromhex(row["session"]).decode() == want.session_id
        assert json.loads(bytes.fromhex(row["properties"])) == want.properties
        context = {
            bytes.fromhex(k).decode(): bytes.fromhex(v).decode()
            for k, v in zip(row["keys"], row["values"], strict=True)
        }
        assert context == want.context
