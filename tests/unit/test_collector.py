"""The collector's pure parts: keys, rate limit, bodies and the ticket webhook mapping."""

from __future__ import annotations

import gzip
import uuid
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.collector import (
    ApiKeys,
    Collector,
    Ignored,
    Message,
    RateLimiter,
    RequestError,
    decode_body,
    parse_keys,
    presented_key,
    serialised,
    split_events,
    ticket_event,
)
from pipeline.config import Settings
from pipeline.errors import ConfigurationError
from pipeline.validate import Accepted, Rejected, check

NOW_MS = 1_780_000_000_000
OCCURRED = "2026-05-28T20:26:00Z"


# --- API keys


def test_keys_parse_pairs_from_commas_newlines_and_comments() -> None:
    text = "# rotated monthly\nweb:w-1, web:w-2\n\napp:a-1,support:s-1\n"
    keys = ApiKeys(parse_keys(text, "keys.txt"))
    assert len(keys) == 4
    assert [keys.source_of(k) for k in ("w-1", "w-2", "a-1", "s-1")] == [
        "web",
        "web",
        "app",
        "support",
    ]
    assert keys.source_of("nope") is None


@pytest.mark.parametrize("entry", ["bare-secret-key", "email:secret-1", "web:", ":secret-2"])
def test_a_bad_key_entry_is_refused_without_echoing_it(entry: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_keys(f"web:ok,{entry}", "XP_COLLECTOR_KEYS")
    assert "XP_COLLECTOR_KEYS: entry 2 " in str(caught.value)
    assert "secret" not in str(caught.value)


def test_one_key_for_two_sources_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="both web and support"):
        ApiKeys([("web", "same"), ("support", "same")])


def test_keys_come_from_the_environment_and_the_file_together(tmp_path: Any) -> None:
    path = tmp_path / "keys"
    path.write_text("support:from-file\n")
    settings = Settings(collector_keys="web:from-env", collector_keys_file=path)
    keys = ApiKeys.from_settings(settings)
    assert (keys.source_of("from-env"), keys.source_of("from-file")) == ("web", "support")
    assert "from-env" not in repr(settings)
    with pytest.raises(ConfigurationError, match="cannot read"):
        ApiKeys.from_settings(Settings(collector_keys_file=tmp_path / "missing"))


def test_the_key_comes_from_bearer_header_or_query() -> None:
    assert presented_key({"Authorization": "Bearer abc"}, {}) == "abc"
    assert presented_key({"Authorization": "bearer  abc "}, {}) == "abc"
    assert presented_key({"X-API-Key": "def"}, {}) == "def"
    assert presented_key({}, {"api_key": "ghi"}) == "ghi"
    assert presented_key({"Authorization": "Basic abc"}, {}) is None
    assert presented_key({}, {}) is None


# --- rate limit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10.0, burst=20, clock=clock)
    assert limiter.take("k", 15) == 0.0
    assert limiter.take("k", 10) == pytest.approx(0.5)  # 5 left, 5 more at 10/s
    clock.now += 0.5
    assert limiter.take("k", 10) == 0.0  # a refused request took nothing
    assert limiter.take("other", 20) == 0.0  # each key has its own bucket
    clock.now += 100
    assert limiter.take("k", 21) == pytest.approx(0.1)  # never more than the burst


# --- bodies


def test_gzip_bodies_are_inflated_within_the_limit() -> None:
    body = b'{"a": 1}'
    assert decode_body(gzip.compress(body), "gzip", 100) == body
    assert decode_body(body, "", 100) == body
    assert decode_body(body, "identity", 100) == body


@pytest.mark.parametrize(
    ("body", "encoding", "status", "code"),
    [
        (gzip.compress(b"0" * 10_000_000), "gzip", 413, "body_too_large"),
        (b"not gzip", "gzip", 400, "invalid_gzip"),
        (gzip.compress(b"{}")[:-4], "gzip", 400, "invalid_gzip"),
        (gzip.compress(b"{}") + b"junk", "gzip", 400, "invalid_gzip"),
        (b"{}", "br", 415, "unsupported_encoding"),
    ],
)
def test_bad_encodings_are_refused(body: bytes, encoding: str, status: int, code: str) -> None:
    with pytest.raises(RequestError) as caught:
        decode_body(body, encoding, 1_000_000)
    assert (caught.value.status, caught.value.code) == (status, code)


def test_one_event_is_kept_byte_for_byte() -> None:
    body = b'{"b": 2,  "a": 1}\n'
    assert split_events(body, "application/json") == [body]


def test_an_array_is_split_into_events() -> None:
    body = b'[{"a": 1}, 5, {"b": [1, 2]}]'
    assert split_events(body, "text/plain") == [b'{"a":1}', b"5", b'{"b":[1,2]}']
    assert split_events(b"[]", "application/octet-stream") == []


def test_ndjson_lines_are_events_even_when_malformed() -> None:
    body = b'{"a": 1}\r\n\n  \n{broken\n{"c": 3}'
    assert split_events(body, "application/x-ndjson") == [b'{"a": 1}', b"{broken", b'{"c": 3}']


# orjson parses 1,024 levels but serialises only 254: an array element deeper than that
# must still become an event, forwarded and checked like any other (docs/collector.md).

PAGE_VIEW = (
    b'{"event_id":"0f8fad5b-d9cb-469f-a165-70867728950e","source":"web","type":"page_view",'
    b'"occurred_at":"2026-05-28T20:26:00Z","anonymous_id":"d-1","properties":{"path":"/"'
)


def deep_page_view(depth: int, where: str = "properties") -> bytes:
    """A page view with `depth` arrays nested in a property, or in an unknown top-level field."""
    deep = b"[" * depth + b"]" * depth
    if where == "properties":
        return PAGE_VIEW + b',"deep":' + deep + b"}}"
    return PAGE_VIEW + b'},"extra":' + deep + b"}"


@pytest.mark.parametrize("depth", [64, 252, 253, 254, 300, 1_021])
def test_an_array_element_too_deep_for_orjson_is_still_an_event(depth: int) -> None:
    element = deep_page_view(depth)
    raws = split_events(b"[" + element + b', {"a": 1}]', "application/json")
    assert raws[1] == b'{"a":1}'
    assert raws[0] == element  # serialised again, exactly as orjson writes what it can
    result = check(raws[0], NOW_MS)
    assert isinstance(result, Rejected)
    assert (result.reason, result.detail) == (
        "invalid_field",
        "properties nest deeper than 64 levels",
    )


def test_a_deep_element_outside_properties_is_accepted_like_the_worker_would() -> None:
    element = deep_page_view(1_021, where="extra")
    (raw,) = split_events(b"[" + element + b"]", "application/json")
    assert raw == element
    assert isinstance(check(raw, NOW_MS), Accepted)


@pytest.mark.parametrize(
    "document",
    [
        {},
        [],
        "text",
        None,
        {"a": 1, "b": [1, 2.5, {}], "c": {"d": None, "e": 'é\u0000"\u2028', "f": []}},
        [[], [[1]], {"x": True, "y": False}, -0.0, 1e300, 2**63],
    ],
)
def test_serialised_writes_what_orjson_writes_at_any_depth(document: Any) -> None:
    assert serialised(document) == orjson.dumps(document)
    arrays: Any = document
    objects: Any = document
    for _ in range(500):
        arrays, objects = [arrays], {"k": objects, "z": 0}
    inner = orjson.dumps(document)
    assert serialised(arrays) == b"[" * 500 + inner + b"]" * 500
    assert serialised(objects) == b'{"k":' * 500 + inner + b',"z":0}' * 500


def test_a_webhook_with_a_field_too_deep_for_orjson_is_rejected_with_its_reason() -> None:
    payload = webhook("ticket.created")
    payload["ticket"]["id"] = orjson.loads(b"[" * 500 + b"]" * 500)
    result = check(serialised(ticket_event(payload)), NOW_MS)
    assert isinstance(result, Rejected)
    assert result.reason == "invalid_field"


async def test_a_request_with_a_too_deep_element_gets_a_202_listing_its_error() -> None:
    collector = Collector(Settings(collector_keys="web:k"), "localhost:1", ApiKeys([("web", "k")]))
    delivered: list[Message] = []

    async def deliver(messages: list[Message], received_ms: int) -> None:
        delivered.extend(messages)

    collector._deliver = deliver  # type: ignore[method-assign]
    deep = deep_page_view(300)
    fine = deep_page_view(1).replace(b"0f8fad5b", b"1f8fad5b")
    async with TestClient(TestServer(collector.app)) as client:
        response = await client.post(
            "/v1/events",
            data=b"[" + deep + b"," + fine + b"]",
            headers={"Authorization": "Bearer k", "Content-Type": "application/json"},
        )
        answer = await response.json()
    assert response.status == 202, answer
    assert answer == {
        "received": 2,
        "accepted": 1,
        "rejected": 1,
        "errors": [
            {
                "index": 0,
                "reason": "invalid_field",
                "detail": "properties nest deeper than 64 levels",
            }
        ],
    }
    assert delivered == [(deep, b"d-1"), (fine, b"d-1")]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{broken", "application/json", 400, "invalid_json"),
        (b'{"a": 1}\n{"b": 2}', "application/json", 400, "invalid_json"),
        (b"42", "application/json", 400, "not_events"),
        (b'"text"', "application/json", 400, "not_events"),
        (b"  \n", "application/json", 400, "empty_body"),
        (b"", "application/x-ndjson", 400, "empty_body"),
        (b"a=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
def test_unreadable_bodies_are_refused(
    body: bytes, content_type: str, status: int, code: str
) -> None:
    with pytest.raises(RequestError) as caught:
        split_events(body, content_type)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert caught.value.message


# --- ticket webhooks


def webhook(kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "dlv-1",
        "type": kind,
        "time": OCCURRED,
        "ticket": {"id": 4711, "channel": "email", "requester": {"id": 9, "external_id": "c-42"}},
        **extra,
    }


def checked(event: dict[str, Any] | Ignored) -> Accepted:
    assert isinstance(event, dict), event
    result = check(orjson.dumps(event), NOW_MS)
    assert isinstance(result, Accepted), result
    return result


@pytest.mark.parametrize(
    ("kind", "extra", "type_", "properties"),
    [
        ("ticket.created", {}, "ticket_opened", {"ticket_id": "4711"}),
        ("ticket.solved", {}, "ticket_resolved", {"ticket_id": "4711"}),
        ("ticket.reopened", {}, "ticket_reopened", {"ticket_id": "4711"}),
        (
            "ticket.comment_added",
            {"comment": {"public": True, "author": {"role": "agent"}}},
            "agent_reply",
            {"ticket_id": "4711", "is_bot": False},
        ),
        (
            "ticket.comment_added",
            {"comment": {"author": {"role": "bot"}}},
            "agent_reply",
            {"ticket_id": "4711", "is_bot": True},
        ),
        (
            "ticket.satisfaction_rated",
            {"rating": {"score": "good"}},
            "csat_submitted",
            {"ticket_id": "4711", "score": 5},
        ),
        (
            "ticket.satisfaction_rated",
            {"rating": {"score": "bad"}},
            "csat_submitted",
            {"ticket_id": "4711", "score": 1},
        ),
        (
            "ticket.satisfaction_rated",
            {"rating": {"score": 4}},
            "csat_submitted",
            {"ticket_id": "4711", "score": 4},
        ),
    ],
)
def test_ticket_webhooks_map_to_support_events(
    kind: str, extra: dict[str, Any], type_: str, properties: dict[str, Any]
) -> None:
    event = checked(ticket_event(webhook(kind, **extra)))
    assert (event.source, event.type, event.properties) == ("support", type_, properties)
    assert (event.customer_id, event.anonymous_id) == ("c-42", None)
    assert event.context == {"platform": "email"}
    assert event.occurred_at_ms == NOW_MS - 40_000


def test_a_redelivered_webhook_is_the_same_event() -> None:
    first = checked(ticket_event(webhook("ticket.created")))
    again = checked(ticket_event(webhook("ticket.created")))
    other = checked(ticket_event({**webhook("ticket.created"), "id": "dlv-2"}))
    assert first.event_id == again.event_id != other.event_id
    assert uuid.UUID(first.event_id).version == 5


def test_a_requester_without_external_id_is_anonymous() -> None:
    payload = webhook("ticket.created")
    payload["ticket"]["requester"] = {"id": 9}
    event = checked(ticket_event(payload))
    assert (event.customer_id, event.anonymous_id) == (None, "ticket-requester:9")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (webhook("ticket.comment_added", comment={"author": {"role": "end_user"}}), "requester"),
        (
            webhook("ticket.comment_added", comment={"public": False, "author": {"role": "agent"}}),
            "internal note",
        ),
        (webhook("ticket.priority_changed"), "no support event"),
        ({"id": "x"}, "no support event"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_webhooks_without_a_touchpoint_are_ignored(payload: object, reason: str) -> None:
    result = ticket_event(payload)
    assert isinstance(result, Ignored)
    assert reason in result.reason


def test_an_incomplete_webhook_becomes_a_rejected_event_with_its_reason() -> None:
    payload = webhook("ticket.created")
    del payload["id"]
    del payload["ticket"]["id"]
    event = ticket_event(payload)
    assert isinstance(event, dict)
    result = check(orjson.dumps(event), NOW_MS)
    assert isinstance(result, Rejected)
    assert result.reason == "missing_field"
    payload = webhook("ticket.satisfaction_rated", rating={"score": "meh"})
    result = check(orjson.dumps(ticket_event(payload)), NOW_MS)
    assert isinstance(result, Rejected)
    assert result.reason == "invalid_field"
