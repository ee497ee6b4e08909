"""Events the producer SDK builds from keyword arguments."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson

from pipeline.producer import build_event
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
