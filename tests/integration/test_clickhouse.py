"""The ClickHouse schema, sink and query helpers against real chDB.

Every test writes keys of its own (a fresh channel, topic or id), because the
whole session shares one chDB engine (see tests/conftest.py).
"""

from __future__ import annotations

import json
import re
import struct
import uuid
from collections.abc import Iterator
from dataclasses import fields
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from pipeline import clickhouse, windows
from pipeline.clickhouse import Rows, Sink
from pipeline.errors import ConfigurationError

pytestmark = pytest.mark.integration

RELATIONS_DOC = Path(__file__).resolve().parents[2] / "docs" / "relations.md"
HOUR_S = 1_700_000_000 // 3600 * 3600
HOUR_MS = HOUR_S * 1000
N_EXPERIENCE = len(clickhouse.EXPERIENCE_PARTIAL_COLUMNS) - 5


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def contract_relations() -> dict[str, list[str]]:
    """Relation name to column names, read from the table in docs/relations.md."""
    relations: dict[str, list[str]] = {}
    for line in RELATIONS_DOC.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`xp."):
            continue
        text = cells[2]
        same_as = re.match(r"as `(\w+)`", text)
        if same_as:
            columns = relations[f"xp.{same_as.group(1)}"]
        else:
            removed = 1
            while removed:
                text, removed = re.subn(r"\([^()]*\)", "", text)
            columns = [item.split()[0] for item in text.split(",")]
        for name in re.findall(r"`(xp\.\w+)`", cells[0]):
            relations[name] = columns
    return relations


def select(client: Client, sql: str) -> list[tuple[Any, ...]]:
    return clickhouse.query(client, sql)[1]


def event(
    event_id: str, channel: str, identity: str, ms: int, topic: str, offset: int
) -> tuple[Any, ...]:
    return (
        event_id,
        channel,
        "page_view",
        ms,
        ms + 250,
        identity,
        identity,
        None,
        "session-1",
        "awareness",
        '{"path": "/"}',
        {"country": "BR"},
        topic,
        0,
        offset,
    )


def stage_partial(
    channel: str, minute: int, counts: tuple[int, int, int, int], partition: int, version: int
) -> tuple[Any, ...]:
    return (HOUR_S + 60 * minute, channel, "awareness", *counts, partition, version)


def experience_partial(channel: str, minute: int, partition: int, version: int) -> tuple[Any, ...]:
    counters = [1] * N_EXPERIENCE
    counters[clickhouse.EXPERIENCE_PARTIAL_COLUMNS.index("first_response_ms_sum") - 3] = -1500
    return (HOUR_S + 60 * minute, channel, "service", *counters, partition, version)


def alert(alert_id: str, status: str, channel: str) -> tuple[Any, ...]:
    period = (HOUR_S, HOUR_S + 3600)
    measures = (3.1, 4.2, -0.26)
    return (
        alert_id,
        status,
        HOUR_MS,
        "csat",
        channel,
        "service",
        *period,
        *measures,
        "country=BR",
        "warning",
        "{}",
    )


def one_of_each(tag: str) -> tuple[Rows, dict[str, str]]:
    """Rows for every storage table, and the filter that finds them in each view."""
    channel, topic, identity, anonymous = f"ch-{tag}", f"topic-{tag}", f"id-{tag}", f"anon-{tag}"
    alert_id = str(uuid.uuid4())
    rows = Rows(
        events=[
            event(str(uuid.uuid4()), channel, identity, HOUR_MS + 1_000, topic, 1),
            event(str(uuid.uuid4()), channel, identity, HOUR_MS + 61_000, topic, 2),
        ],
        rejected=[
            (HOUR_MS, "invalid_json", "expected value", b"\xff{", 0, topic, 0, 3),
            (HOUR_MS, "not_an_object", "got a list", "[1]", 0, topic, 0, 4),
        ],
        duplicates=[(HOUR_MS, str(uuid.uuid4()), topic, 0, 5)],
        stage_entries=[
            (identity, "awareness", channel, HOUR_MS + 1_000, 0, None),
            (identity, "consideration", channel, HOUR_MS + 61_000, 1, 60.0),
        ],
        identity_links=[(anonymous, identity, HOUR_MS)],
        stage_partials=[
            stage_partial(channel, 0, (1, 1, 1, 0), 0, 1),
            stage_partial(channel, 1, (1, 1, 0, 0), 0, 2),
        ],
        experience_partials=[experience_partial(channel, 0, 0, 1)],
        alerts=[alert(alert_id, status, channel) for status in ("firing", "resolved")],
    )
    where = {
        "xp.events": f"topic = '{topic}'",
        "xp.rejected_events": f"topic = '{topic}'",
        "xp.duplicates": f"topic = '{topic}'",
        "xp.stage_entries": f"identity = '{identity}'",
        "xp.identity_links": f"anonymous_id = '{anonymous}'",
        "xp.alerts": f"alert_id = '{alert_id}'",
    }
    for period in ("minute", "hour", "day"):
        where[f"xp.stage_{period}"] = f"channel = '{channel}'"
        where[f"xp.experience_{period}"] = f"channel = '{channel}'"
    return rows, where


KEYS = {
    "xp.events": "event_id",
    "xp.rejected_events": "topic, partition, offset",
    "xp.duplicates": "topic, partition, offset",
    "xp.stage_entries": "identity, stage",
    "xp.identity_links": "anonymous_id",
    "xp.alerts": "alert_id, status",
}


def test_migrate_applies_each_file_once_and_refuses_edits(
    chdb_client: Client, tmp_path: Path
) -> None:
    shipped = sorted(p.name for p in clickhouse.MIGRATIONS_DIR.glob("*.sql"))
    assert clickhouse.migrate(chdb_client) == []
    recorded = select(chdb_client, "SELECT name FROM xp.schema_migrations FINAL")
    assert set(shipped) <= {name for (name,) in recorded}

    tag = uuid.uuid4().hex[:12]
    table = f"xp.probe_{tag}"
    first, second = tmp_path / f"0001_probe_{tag}.sql", tmp_path / f"0002_probe_{tag}.sql"
    first.write_text(
        f"-- a comment; with a semicolon\nCREATE TABLE IF NOT EXISTS {table} (x UInt8)\n"
        "ENGINE = MergeTree ORDER BY x;\n"
    )
    second.write_text(f"CREATE VIEW IF NOT EXISTS {table}_view AS\nSELECT x FROM {table};\n")
    try:
        assert clickhouse.migrate(chdb_client, tmp_path) == [first.name, second.name]
        assert clickhouse.migrate(chdb_client, tmp_path) == []
        assert select(chdb_client, f"SELECT count() FROM {table}_view") == [(0,)]

        second.write_text(second.read_text() + "\n")
        with pytest.raises(clickhouse.MigrationError, match="append-only"):
            clickhouse.migrate(chdb_client, tmp_path)
    finally:
        chdb_client.command(f"DROP VIEW IF EXISTS {table}_view")
        chdb_client.command(f"DROP TABLE IF EXISTS {table}")


def test_migrate_refuses_a_directory_without_migrations(
    chdb_client: Client, tmp_path: Path
) -> None:
    with pytest.raises(clickhouse.MigrationError, match="no migration files"):
        clickhouse.migrate(chdb_client, tmp_path)


def test_every_relation_of_the_contract_has_exactly_its_columns(chdb_client: Client) -> None:
    expected = contract_relations()
    assert len(expected) == 13
    assert len(expected["xp.experience_day"]) == 29
    found: dict[str, list[str]] = {}
    for table, name in select(
        chdb_client,
        "SELECT table, name FROM system.columns WHERE database = 'xp' ORDER BY table, position",
    ):
        found.setdefault(f"xp.{table}", []).append(name)
    assert {name: found.get(name) for name in expected} == expected


def test_storage_tables_take_the_sink_columns(chdb_client: Client) -> None:
    expected = {
        "xp.events_store": clickhouse.EVENT_COLUMNS,
        "xp.rejected_events_store": clickhouse.REJECTED_COLUMNS,
        "xp.duplicates_store": clickhouse.DUPLICATE_COLUMNS,
        "xp.stage_entries_store": clickhouse.STAGE_ENTRY_COLUMNS,
        "xp.identity_links_store": clickhouse.IDENTITY_LINK_COLUMNS,
        "xp.stage_minute_partial": clickhouse.STAGE_PARTIAL_COLUMNS,
        "xp.experience_minute_partial": clickhouse.EXPERIENCE_PARTIAL_COLUMNS,
        "xp.alerts_store": clickhouse.ALERT_COLUMNS,
    }
    assert set(expected) == set(clickhouse.STORAGE_TABLES)
    for table, columns in expected.items():
        described = select(
            chdb_client,
            f"SELECT name FROM system.columns WHERE database = 'xp' "
            f"AND table = '{table.removeprefix('xp.')}' ORDER BY position",
        )
        assert tuple(name for (name,) in described) == columns
    # The processor fills experience partial rows in the order of the window counters.
    assert clickhouse.EXPERIENCE_PARTIAL_COLUMNS[3:-2] == windows.EXPERIENCE_COLUMNS


def test_writing_the_same_rows_twice_leaves_one_row_per_key(chdb_client: Client) -> None:
    rows, where = one_of_each(fresh("twice"))
    sink = Sink(chdb_client)
    sink.write(rows)
    once = {
        view: select(chdb_client, f"SELECT * FROM {view} WHERE {cond} ORDER BY ALL")
        for view, cond in where.items()
    }
    sink.write(rows)

    for view, cond in where.items():
        assert select(chdb_client, f"SELECT * FROM {view} WHERE {cond} ORDER BY ALL") == once[view]
    for view, key in KEYS.items():
        counts = select(
            chdb_client, f"SELECT count(), uniqExact({key}) FROM {view} WHERE {where[view]}"
        )
        assert counts[0][0] == counts[0][1] > 0, view
    assert [len(once[f"xp.stage_{p}"]) for p in ("minute", "hour", "day")] == [2, 1, 1]
    assert [len(once[f"xp.experience_{p}"]) for p in ("minute", "hour", "day")] == [1, 1, 1]
    window_start, _, _, events, customers, entries, conversions = once["xp.stage_hour"][0]
    assert window_start == datetime.fromtimestamp(HOUR_S, UTC)
    assert (events, customers, entries, conversions) == (2, 1, 1, 0)
    raws = [row[3] for row in once["xp.rejected_events"]]
    assert raws == ["\ufffd{", "[1]"]


def test_partial_rows_of_two_partitions_add_up(chdb_client: Client) -> None:
    channel = fresh("ch")
    Sink(chdb_client).write(
        Rows(
            stage_partials=[
                stage_partial(channel, 5, (10, 4, 3, 1), 0, 7),
                stage_partial(channel, 5, (6, 2, 1, 1), 1, 3),
            ],
            experience_partials=[
                experience_partial(channel, 5, 0, 7),
                experience_partial(channel, 5, 1, 3),
            ],
        )
    )
    stage = select(
        chdb_client,
        f"SELECT events, customers, entries, conversions "
        f"FROM xp.stage_minute WHERE channel = '{channel}'",
    )
    assert stage == [(16, 6, 4, 2)]
    experience = select(
        chdb_client,
        f"SELECT * EXCEPT (window_start, channel, stage) "
        f"FROM xp.experience_minute WHERE channel = '{channel}'",
    )
    expected = [2] * N_EXPERIENCE
    expected[clickhouse.EXPERIENCE_PARTIAL_COLUMNS.index("first_response_ms_sum") - 3] = -3000
    assert experience == [tuple(expected)]


def test_the_newest_version_of_a_partial_row_wins(chdb_client: Client) -> None:
    channel = fresh("ch")
    sink = Sink(chdb_client)
    sink.write(Rows(stage_partials=[stage_partial(channel, 0, (5, 2, 1, 0), 3, 100)]))
    sink.write(Rows(stage_partials=[stage_partial(channel, 0, (7, 3, 2, 1), 3, 200)]))
    sink.write(Rows(stage_partials=[stage_partial(channel, 0, (1, 1, 1, 1), 3, 150)]))
    minute = select(
        chdb_client,
        f"SELECT events, customers, entries, conversions "
        f"FROM xp.stage_minute WHERE channel = '{channel}'",
    )
    assert minute == [(7, 3, 2, 1)]


def test_hourly_and_daily_customers_are_exact_distinct_counts(chdb_client: Client) -> None:
    channel, topic = fresh("ch"), fresh("topic")
    minutes = {0: ["a", "b"], 1: ["b", "c"], 59: ["a"]}
    events = [
        event(str(uuid.uuid4()), channel, f"{topic}-{who}", HOUR_MS + m * 60_000, topic, i)
        for i, (m, who) in enumerate((m, w) for m, ids in minutes.items() for w in ids)
    ]
    next_hour = event(str(uuid.uuid4()), channel, f"{topic}-d", HOUR_MS + 3_600_000, topic, 9)
    partials = [
        stage_partial(channel, m, (len(ids), len(ids), 0, 0), 0, 1) for m, ids in minutes.items()
    ]
    partials.append(stage_partial(channel, 60, (1, 1, 0, 0), 0, 1))
    Sink(chdb_client).write(Rows(events=[*events, next_hour], stage_partials=partials))

    def customers(view: str) -> list[tuple[Any, ...]]:
        return select(
            chdb_client,
            f"SELECT window_start, events, customers FROM {view} "
            f"WHERE channel = '{channel}' ORDER BY window_start",
        )

    start = datetime.fromtimestamp(HOUR_S, UTC)
    assert sum(row[2] for row in customers("xp.stage_minute")) == 6
    assert customers("xp.stage_hour") == [(start, 5, 3), (start + timedelta(hours=1), 1, 1)]
    day = datetime(start.year, start.month, start.day, tzinfo=UTC)
    assert customers("xp.stage_day") == [(day, 6, 4)]


def test_the_first_link_of_an_anonymous_id_wins(chdb_client: Client) -> None:
    anonymous = fresh("anon")
    sink = Sink(chdb_client)
    # Two customers on one device are linked on two partitions, the later one written first.
    sink.write(Rows(identity_links=[(anonymous, "customer-b", HOUR_MS + 5_000)]))
    sink.write(Rows(identity_links=[(anonymous, "customer-a", HOUR_MS + 1_000)]))
    links = select(
        chdb_client, f"SELECT * FROM xp.identity_links WHERE anonymous_id = '{anonymous}'"
    )
    assert links == [(anonymous, "customer-a", datetime.fromtimestamp(HOUR_S + 1, UTC))]


def test_json_lines_round_trip_a_view(chdb_client: Client) -> None:
    rows, where = one_of_each(fresh("json"))
    Sink(chdb_client).write(rows)
    for view in ("xp.events", "xp.stage_entries", "xp.alerts", "xp.experience_hour"):
        columns, values = clickhouse.query(
            chdb_client, f"SELECT * FROM {view} WHERE {where[view]} ORDER BY ALL"
        )
        text = clickhouse.format_json_lines(columns, values)
        objects = [json.loads(line) for line in text.splitlines()]
        assert len(objects) == len(values) > 0
        for obj, row in zip(objects, values, strict=True):
            assert list(obj) == columns
            for name, value in zip(columns, row, strict=True):
                if isinstance(value, datetime):
                    assert obj[name].endswith("Z")
                    assert datetime.fromisoformat(obj[name]) == value
                else:
                    assert obj[name] == value, (view, name)


def test_json_lines_encode_every_kind_of_value() -> None:
    tokyo = timezone(timedelta(hours=9))
    values = (
        Decimal("12.50"),
        float("nan"),
        None,
        b"\xffok",
        datetime(2024, 1, 1, 9, 0, 0, 500000, tzinfo=tokyo),
        datetime(2024, 1, 1),
        date(2024, 1, 2),
        {1: "one", "k": [1, 2]},
        (1, "a"),
        uuid.UUID(int=1),
        True,
    )
    columns = [f"c{i}" for i in range(len(values))]
    text = clickhouse.format_json_lines(columns, [values])
    assert text.endswith("}\n") and text.count("\n") == 1
    assert list(json.loads(text, parse_float=Decimal).values()) == [
        Decimal("12.50"),
        None,
        None,
        "\ufffdok",
        "2024-01-01T00:00:00.500Z",
        "2024-01-01T00:00:00Z",
        "2024-01-02",
        {"1": "one", "k": [1, 2]},
        [1, "a"],
        "00000000-0000-0000-0000-000000000001",
        True,
    ]
    assert clickhouse.format_json_lines(columns, []) == ""


def test_format_table_aligns_columns() -> None:
    text = clickhouse.format_table(
        ["name", "n"], [("a\nb", 1), ("longer name", 12345), (None, None)]
    )
    lines = text.splitlines()
    assert lines[-1] == "(3 rows)"
    assert lines[2] == "a\\nb        |     1"
    assert {line.index("|") for line in lines[:1] + lines[2:-1]} == {lines[1].index("+")}
    assert clickhouse.format_table([], []) == ""


def test_sink_refuses_rows_of_the_wrong_width(chdb_client: Client) -> None:
    with pytest.raises(ValueError, match="alerts rows have 2 values"):
        Sink(chdb_client).write(Rows(alerts=[("id", "firing")]))


# Strings JSON or a careless encoder could bend: quotes, escapes, NUL and other
# control characters, line separators, non-BMP characters, look-alike literals.
HOSTILE = [
    "",
    "plain",
    "quote \" and ' apostrophe",
    "back\\slash \\u0000 \\n \\",
    "nul \x00 inside",
    "controls \x01\x07\x08\x0b\x0c\x1b\x1f\x7f",
    "newline\nreturn\r\ttab",
    "unicode é 東京 😀 \u2028\u2029 \ufeff \ufffe \U0010ffff",
    '{"a": [1, null], "b": "\\"x\\""}',
    "2024-01-01 00:00:00.123",
    "1e308",
    "null",
]
# Epoch ms from 1970 to the end of DateTime's range, around every digit count.
MILLISECONDS = [
    0,
    1,
    5,
    999,
    1_000,
    1_001,
    59_999,
    HOUR_MS + 7,
    1_700_000_000_123,
    1_795_345_203_150,
    4_102_444_800_000,
    4_294_967_295_999,
]
SECONDS = [0, 1, 59, HOUR_S, 1_795_345_200, 2**32 - 1]
# Shortest-repr doubles, the last three of which ClickHouse's default (fast)
# float parser reads one ulp off.
FLOATS = [
    0.0,
    -0.0,
    0.1,
    1 / 3,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    -123456.789,
    60.0,
    7.654927133881691e-231,
    2.2790121708605243e274,
    1.3383932992236106e160,
]
RAWS: list[bytes | str] = [
    b"\xff\xfe{",
    b"",
    b"\x00\x80abc\xc3",
    "[1]",
    "caf\u00e9",
    b"\xed\xa0\x80",
]


def hostile_rows(tag: str) -> Rows:
    """Rows for every storage table using every column type at its edges.

    Channels, stages and the other columns views group by carry the tag too,
    and partials sit on partitions no pipeline uses, so that nothing another
    test reads from the shared engine changes.
    """
    n = len(HOSTILE)

    def text(i: int) -> str:
        return HOSTILE[i % n]

    def label(i: int) -> str:
        return f"{tag}{text(i)}"

    def ms(i: int) -> int:
        return MILLISECONDS[i % len(MILLISECONDS)]

    def s(i: int) -> int:
        return SECONDS[i % len(SECONDS)]

    uint64 = [0, 1, 2**63, 2**64 - 1]
    return Rows(
        events=[
            (
                f"{tag}-{i}{text(i)}",
                label(i),
                label(i + 1),
                ms(i),
                ms(i + 5),
                text(i + 2),
                None if i % 3 == 0 else text(i + 3),
                None if i % 3 == 1 else text(i + 4),
                text(i + 5),
                label(i + 6),
                text(i + 7),
                {} if i == 0 else {text(i): text(i + 1), text(i + 2): "", "k": text(i + 3)},
                tag,
                [0, 1, 2**32 - 1][i % 3],
                uint64[i % 4],
            )
            for i in range(n)
        ],
        rejected=[
            (ms(i), label(i), text(i + 1), raw, i % 2, tag, i, uint64[i % 4])
            for i, raw in enumerate(RAWS)
        ],
        duplicates=[(ms(i), text(i), tag, i, uint64[i % 4]) for i in range(n)],
        stage_entries=[
            (
                f"{tag}-{i}{text(i)}",
                label(i + 1),
                label(i + 2),
                ms(i),
                i % 2,
                None if i == len(FLOATS) else FLOATS[i],
            )
            for i in range(len(FLOATS) + 1)
        ],
        identity_links=[(f"{tag}-{i}{text(i)}", text(i + 1), ms(i)) for i in range(n)],
        stage_partials=[
            (s(i), f"{tag}-{i}{text(i)}", label(i + 1), *uint64, 2**32 - 1 - i, uint64[i % 4])
            for i in range(n)
        ],
        experience_partials=[
            (
                s(i),
                f"{tag}-{i}{text(i)}",
                label(i + 1),
                *[
                    [-(2**63), 2**63 - 1, -1][i % 3] if name.endswith("_ms_sum") else uint64[j % 4]
                    for j, name in enumerate(windows.EXPERIENCE_COLUMNS)
                ],
                2**32 - 1 - i,
                uint64[i % 4],
            )
            for i in range(n)
        ],
        alerts=[
            (
                f"{tag}-{i}{text(i)}",
                label(i + 1),
                ms(i),
                label(i + 2),
                label(i + 3),
                label(i + 4),
                s(i),
                s(i + 1),
                FLOATS[i % len(FLOATS)],
                FLOATS[(i + 4) % len(FLOATS)],
                FLOATS[(i + 8) % len(FLOATS)],
                text(i + 5),
                label(i + 6),
                text(i + 7),
            )
            for i in range(n)
        ],
    )


# Where each storage table keeps a test's rows, by the tag its keys start with.
TAGGED = {
    "events": "topic = '{tag}'",
    "rejected": "topic = '{tag}'",
    "duplicates": "topic = '{tag}'",
    "stage_entries": "startsWith(identity, '{tag}-')",
    "identity_links": "startsWith(anonymous_id, '{tag}-')",
    "stage_partials": "startsWith(channel, '{tag}-')",
    "experience_partials": "startsWith(channel, '{tag}-')",
    "alerts": "startsWith(alert_id, '{tag}-')",
}


def exact(value: Any) -> Any:
    """A value compared byte for byte: text as UTF-8, floats as their bits."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, float):
        return struct.pack("<d", value)
    if isinstance(value, dict):
        return {exact(k): exact(v) for k, v in value.items()}
    return value


def stored(client: Client, field: str, tag: str) -> list[tuple[Any, ...]]:
    """A table's rows of `tag` as written: timestamps as epoch ints, strings as bytes."""
    table = clickhouse.STORAGE_TABLES[[f.name for f in fields(Rows)].index(field)]
    types = client.query(
        f"SELECT name, type FROM system.columns WHERE database = 'xp' "
        f"AND table = '{table.removeprefix('xp.')}' ORDER BY position"
    ).result_rows
    as_written = {
        "DateTime64(3, 'UTC')": "toUnixTimestamp64Milli({})",
        "DateTime('UTC')": "toUnixTimestamp({})",
    }
    columns = ", ".join(as_written.get(t, "{}").format(f"`{name}`") for name, t in types)
    result = client.query(
        f"SELECT {columns} FROM {table} WHERE {TAGGED[field].format(tag=tag)}",
        query_formats={"String": "bytes"},
    )
    return sorted(tuple(exact(v) for v in row) for row in result.result_rows)


@pytest.fixture
def insert_formats(chdb_client: Client, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The format each table was last inserted in, through the session client."""
    formats: dict[str, str] = {}
    raw_insert, insert = chdb_client.raw_insert, chdb_client.insert

    def recording_raw_insert(table: str, *args: Any, **kwargs: Any) -> Any:
        formats[table] = kwargs["fmt"]
        return raw_insert(table, *args, **kwargs)

    def recording_insert(*args: Any, **kwargs: Any) -> Any:
        formats[kwargs["context"].table] = "Native"
        return insert(*args, **kwargs)

    monkeypatch.setattr(chdb_client, "raw_insert", recording_raw_insert)
    monkeypatch.setattr(chdb_client, "insert", recording_insert)
    return formats


@pytest.fixture
def lenient_session(chdb_client: Client) -> Iterator[None]:
    """The session client parsing input as loosely as a server's profile may.

    chDB defaults to the precise float parser, ClickHouse 24.8 (docker-compose)
    to the fast one, which reads some shortest-repr doubles one ulp off.
    """
    lenient = {"precise_float_parsing": "0", "date_time_input_format": "best_effort"}
    names = ", ".join(f"'{name}'" for name in lenient)
    before = chdb_client.query(
        f"SELECT name, value FROM system.settings WHERE name IN ({names})"
    ).result_rows
    for name, value in lenient.items():
        chdb_client.set_client_setting(name, value)
    try:
        yield
    finally:
        for name, value in before:
            chdb_client.set_client_setting(name, value)


@pytest.mark.usefixtures("lenient_session")
def test_every_column_type_round_trips_byte_identical(
    chdb_client: Client, insert_formats: dict[str, str]
) -> None:
    tag = fresh("exact")
    rows = hostile_rows(tag)
    Sink(chdb_client).write(rows)

    for name in TAGGED:
        written = sorted(tuple(exact(v) for v in row) for row in getattr(rows, name))
        assert stored(chdb_client, name, tag) == written, name
    # Raw payloads need not be UTF-8: only they stay with clickhouse-connect's Native insert.
    assert insert_formats == {
        table: "Native" if table == "xp.rejected_events_store" else "JSONCompactColumns"
        for table in clickhouse.STORAGE_TABLES
    }


def test_non_finite_floats_are_stored_as_they_are(
    chdb_client: Client, insert_formats: dict[str, str]
) -> None:
    tag = fresh("nan")
    nan, inf = float("nan"), float("inf")
    rows = hostile_rows(tag)
    rows = Rows(
        stage_entries=[(f"{tag}-{i}", tag, tag, HOUR_MS, 1, v) for i, v in enumerate([nan, -inf])],
        alerts=[(*rows.alerts[0][:8], nan, inf, -inf, *rows.alerts[0][11:])],
    )
    Sink(chdb_client).write(rows)

    for name in ("stage_entries", "alerts"):
        written = sorted(tuple(exact(v) for v in row) for row in getattr(rows, name))
        assert stored(chdb_client, name, tag) == written, name
    # JSON has no NaN or infinity: these batches went in as Native.
    assert set(insert_formats.values()) == {"Native"}


@pytest.mark.parametrize(
    ("event_id", "error"),
    [
        (None, DatabaseError),  # a null becomes no default
        (12, DatabaseError),  # a number becomes no string
        (datetime(2024, 1, 1, tzinfo=UTC), TypeError),  # nor does a datetime
    ],
)
def test_the_json_insert_refuses_values_of_the_wrong_type(
    chdb_client: Client, event_id: Any, error: type[Exception]
) -> None:
    topic = fresh("strict")
    with pytest.raises(error):
        Sink(chdb_client).write(Rows(duplicates=[(HOUR_MS, event_id, topic, 0, 1)]))
    assert select(chdb_client, f"SELECT count() FROM xp.duplicates WHERE topic = '{topic}'") == [
        (0,)
    ]


def test_only_column_types_with_an_exact_json_encoding_are_planned() -> None:
    types = ["String", "DateTime64(3, 'UTC')", "Nullable(Float64)", "UInt8", "DateTime64(3, 'UTC')"]
    assert clickhouse._json_positions(types) == ((1, 4), (2,))
    with pytest.raises(ValueError, match=r"Decimal\(9, 2\), Array\(String\)"):
        clickhouse._json_positions(["String", "Decimal(9, 2)", "Array(String)", "Decimal(9, 2)"])


def test_rows_count_every_relation() -> None:
    rows = Rows(events=[("e",), ("f",)], alerts=[("a",), ("b",)])
    assert not rows.empty and rows.count() == 4
    assert Rows().empty and Rows().count() == 0


def test_joined_rows_keep_every_batch_in_order() -> None:
    first = Rows(events=[("e1",), ("e2",)], duplicates=[("d1",)])
    second = Rows(events=[("e3",)], alerts=[("a1",)])
    joined = Rows.joined([first, second, Rows(duplicates=[("d2",)])])
    assert joined.events == [("e1",), ("e2",), ("e3",)]
    assert joined.duplicates == [("d1",), ("d2",)]
    assert joined.alerts == [("a1",)] and joined.count() == 6
    assert first.events == [("e1",), ("e2",)]  # the batches' own rows are untouched


def test_connect_keeps_one_engine_per_process(chdb_client: Client, chdb_data_dir: Path) -> None:
    assert clickhouse.connect(None, chdb_data_dir) is chdb_client
    with pytest.raises(clickhouse.EngineConflictError, match="already open"):
        clickhouse.connect(None, chdb_data_dir / "elsewhere")


def test_http_url_carries_credentials_and_database() -> None:
    options = clickhouse._http_options("https://xp%40corp:p%3Ass@ch.internal/xp")
    assert options == {
        "interface": "https",
        "host": "ch.internal",
        "port": 8443,
        "username": "xp@corp",
        "password": "p:ss",
        "database": "xp",
    }
    with pytest.raises(ConfigurationError, match="must look like"):
        clickhouse._http_options("clickhouse://host:9000")
