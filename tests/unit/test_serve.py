"""What `xp serve` sends over its query endpoint, and which statements it answers."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from pipeline import clickhouse
from pipeline.serve import decode_value, encode_value, read_only_statement

VALUES: list[Any] = [
    None,
    True,
    0,
    -(2**63),
    2**64 - 1,
    2**127,
    -(2**100),
    1.5,
    float("nan"),
    float("inf"),
    float("-inf"),
    "text",
    datetime(2026, 5, 28, 20, 26, 40, 123000, tzinfo=UTC),
    date(2026, 5, 28),
    Decimal("12.340"),
    [1, "a", None],
    (1, "x", [2.5]),
    {"k": 1, "l": [1]},
    {1: (2, 3)},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_values_survive_the_trip_as_both_outputs_print_them(value: Any) -> None:
    back = decode_value(orjson.loads(orjson.dumps(encode_value(value))))
    assert type(back) is type(value)
    assert clickhouse.format_table(["v"], [(back,)]) == clickhouse.format_table(["v"], [(value,)])
    assert clickhouse.format_json_lines(["v"], [(back,)]) == clickhouse.format_json_lines(
        ["v"], [(value,)]
    )


def test_other_types_travel_as_the_text_both_outputs_print() -> None:
    value = uuid.uuid4()
    back = decode_value(orjson.loads(orjson.dumps(encode_value(value))))
    assert clickhouse.format_json_lines(["v"], [(back,)]) == clickhouse.format_json_lines(
        ["v"], [(value,)]
    )


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "  select * from xp.events",
        "WITH 1 AS a SELECT a",
        "SHOW TABLES FROM xp",
        "DESCRIBE xp.events",
        "desc xp.events",
        "EXPLAIN SELECT 1",
        "EXISTS TABLE xp.events",
        "-- the funnel\nSELECT 1",
        "/* a\nblock */ (SELECT 1)",
    ],
)
def test_reads_are_answered(sql: str) -> None:
    assert read_only_statement(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO xp.events VALUES",
        "DROP TABLE xp.events",
        "TRUNCATE TABLE xp.events_store",
        "ALTER TABLE xp.events DELETE WHERE 1",
        "SET readonly = 0",
        "-- SELECT\nDROP TABLE x",
        "",
        "   ",
    ],
)
def test_writes_are_not(sql: str) -> None:
    assert not read_only_statement(sql)
