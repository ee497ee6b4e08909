"""Events the producer SDK builds from keyword arguments."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from unittest.mock import Mock

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from pipeline.producer import InvalidEventError, Producer, build_event
from pipeline.validate import Accepted, Rejected, check

NOW = datetime(2026, 5, 28, 20, 26, 40, tzinfo=UTC)
NOW_MS = 1_780_000_000_000


def test_a_built_event_passes_the_contract_with_a_fresh_id_and_time() -> None:
    first = build_event("page_view", source="web", anonymous_id="d-1", properties={"path": "/"})
    second = build_event("page_view", source="web", anonymous_id="d-1", properties={"path": "/"})
    assert first["event_id"] != second["event_id"]
    assert uuid.UUID(first["event_id"]).version == 4
    assert first["occurred_at"].endswith("+00:00")
    result = check(orjson.dumps(first), int(datetime.now(UTC).timestamp() * 1000))
    assert isinstance(result, Accepted)
    assert result.properties == {"path": "/"}
    assert "customer_id" not in first and "context" not in first


def test_times_keep_their_offset_and_milliseconds() -> None:
    moment = datetime(2026, 5, 28, 22, 26, 39, 987654, tzinfo=timezone(timedelta(hours=2)))
    event = build_event(
        "purchase",
        source="app",
        customer_id="c-1",
        occurred_at=moment,
        context={"platform": "ios"},
        properties={"order_id": "o-1", "revenue": 9.5, "currency": "EUR"},
    )
    assert event["occurred_at"] == "2026-05-28T22:26:39.987+02:00"
    result = check(orjson.dumps(event), NOW_MS)
    assert isinstance(result, Accepted)
    assert result.occurred_at_ms == NOW_MS - 13
    assert result.context == {"platform": "ios"}


def test_a_naive_time_or_a_missing_property_breaks_the_contract() -> None:
    naive = build_event(
        "page_view", source="web", anonymous_id="d", occurred_at=NOW.replace(tzinfo=None)
    )
    missing = build_event("purchase", source="web", customer_id="c", occurred_at=NOW)
    for event in (naive, missing):
        result = check(orjson.dumps(event), NOW_MS)
        assert isinstance(result, Rejected)
        assert result.reason == "invalid_field"


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def unstarted_producer() -> Producer:
    """A producer whose Kafka client must never be used: every event here is refused first."""
    xp = Producer("localhost:1", source="web")
    xp._kafka = Mock(spec=AIOKafkaProducer)
    return xp


def circular() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


@pytest.mark.parametrize(
    ("properties", "detail"),
    [
        # orjson serialises 254 levels: the event is 1, properties 2, `deep` 3 and more.
        ({"deep": nested(252)}, "properties nest deeper than 64 levels"),
        ({"deep": nested(253)}, "nests deeper than JSON serialisation allows"),
        ({"deep": nested(1_000)}, "properties may nest 64 levels"),
        ({"loop": circular()}, "or contains itself"),
        ({"tags": {"a", "b"}}, "cannot be serialised as JSON: Type is not JSON serializable: set"),
        ({"n": 2**64}, "cannot be serialised as JSON: Integer exceeds 64-bit range"),
    ],
)
async def test_an_event_that_cannot_be_json_is_an_invalid_event(
    properties: dict[str, Any], detail: str
) -> None:
    xp = unstarted_producer()
    with pytest.raises(InvalidEventError) as caught:
        await xp.send("page_view", anonymous_id="d-1", path="/", **properties)
    assert caught.value.reason == "invalid_field"
    assert detail in caught.value.detail
    assert not xp._batch and not xp._kafka.method_calls  # type: ignore[union-attr]
