"""The stateless checks of docs/semantics.md section 1, from realistic messages."""

from __future__ import annotations

import re
from typing import Annotated, Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, PlainValidator, ValidationError, model_validator

from pipeline.validate import REASONS, Accepted, Rejected, check, dict_validator, timestamp_ms
from schemas import EVENT_MODELS, PROPERTIES_MODELS, TYPES_BY_SOURCE, TouchpointEvent

RECEIVED_AT_MS = 1_714_564_800_000  # 2024-05-01T12:00:00Z
NOW = "2024-05-01T12:00:00Z"
EVENT_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

EXAMPLE_PROPERTIES: dict[str, dict[str, Any]] = {
    "page_view": {"path": "/pricing", "referrer": "https://news.example/launch"},
    "click": {"target": "#buy-now"},
    "search": {"query": "running shoes"},
    "signup": {},
    "add_to_cart": {"sku": "SHOE-42", "value": 89.5},
    "checkout_started": {},
    "purchase": {"order_id": "ord-7781", "revenue": 129.0, "currency": "EUR"},
    "web_vital": {"name": "LCP", "value": 2310.4},
    "error": {"message": "TypeError: cart is undefined", "fatal": False},
    "app_install": {},
    "app_open": {},
    "screen_view": {"screen": "Checkout"},
    "tap": {},
    "crash": {"message": "NullPointerException in CartView"},
    "ticket_opened": {"ticket_id": "T-1001"},
    "agent_reply": {"ticket_id": "T-1001", "is_bot": True},
    "ticket_resolved": {"ticket_id": "T-1001"},
    "ticket_reopened": {"ticket_id": "T-1001"},
    "chat_started": {},
    "csat_submitted": {"score": 5},
    "nps_submitted": {"score": 0},
    "ces_submitted": {"score": 7},
}


def event(**fields: Any) -> dict[str, Any]:
    """A valid web page view; keyword arguments replace fields, None removes one."""
    body: dict[str, Any] = {
        "event_id": EVENT_ID,
        "schema_version": 1,
        "source": "web",
        "type": "page_view",
        "occurred_at": "2024-05-01T11:59:58.250Z",
        "customer_id": "cust-0042",
        "anonymous_id": "anon-9f2c",
        "session_id": "sess-17",
        "properties": {"path": "/pricing"},
        "context": {"platform": "web", "country": "DE", "browser": "firefox"},
    }
    body.update(fields)
    return {key: value for key, value in body.items() if value is not None}


def run(body: Any, **kwargs: int) -> Accepted | Rejected:
    return check(orjson.dumps(body), RECEIVED_AT_MS, **kwargs)


def accepted(body: Any, **kwargs: int) -> Accepted:
    result = run(body, **kwargs)
    assert isinstance(result, Accepted), result
    return result


def rejected(raw: bytes | Any, reason: str) -> Rejected:
    result = check(raw if isinstance(raw, bytes) else orjson.dumps(raw), RECEIVED_AT_MS)
    assert isinstance(result, Rejected), result
    assert result.reason == reason, result
    return result


# Valid events


def test_examples_cover_every_type() -> None:
    assert {type_ for _, type_ in PROPERTIES_MODELS} == set(EXAMPLE_PROPERTIES)
    assert set(PROPERTIES_MODELS) == {
        (source, type_) for source, types in TYPES_BY_SOURCE.items() for type_ in types
    }


@pytest.mark.parametrize(("source", "type_"), sorted(PROPERTIES_MODELS))
def test_every_source_and_type_is_accepted(source: str, type_: str) -> None:
    properties = EXAMPLE_PROPERTIES[type_]
    result = accepted(event(source=source, type=type_, properties=properties))
    assert (result.source, result.type, result.properties) == (source, type_, properties)


def test_accepted_event_carries_envelope() -> None:
    result = accepted(event())
    assert result == Accepted(
        event_id=EVENT_ID,
        source="web",
        type="page_view",
        occurred_at_ms=RECEIVED_AT_MS - 1_750,
        received_at_ms=RECEIVED_AT_MS,
        customer_id="cust-0042",
        anonymous_id="anon-9f2c",
        session_id="sess-17",
        properties={"path": "/pricing"},
        context={"platform": "web", "country": "DE", "browser": "firefox"},
    )
    assert result.identity == "cust-0042"


def test_identity_falls_back_to_the_anonymous_id() -> None:
    assert accepted(event(customer_id=None)).identity == "anon-9f2c"


def test_unknown_property_keys_are_kept_as_received() -> None:
    properties = {
        "order_id": "ord-1",
        "revenue": 20,
        "currency": "USD",
        "coupon": "SPRING",
        "items": [{"sku": "A", "qty": 2}],
    }
    result = accepted(event(type="purchase", properties=properties))
    assert result.properties == properties
    assert type(result.properties["revenue"]) is int


def test_unknown_top_level_keys_are_ignored() -> None:
    result = accepted(event(received_at="1999-01-01T00:00:00Z", experiment="b", ip="10.0.0.1"))
    assert result.received_at_ms == RECEIVED_AT_MS


def test_optional_fields_may_be_absent() -> None:
    body = event(type="signup", customer_id=None, session_id=None, context=None, properties=None)
    del body["schema_version"]
    result = accepted(body)
    assert (result.customer_id, result.session_id) == (None, None)
    assert (result.properties, result.context) == ({}, {})


def test_null_optional_fields_count_as_absent() -> None:
    body = event(type="signup") | {
        "schema_version": None,
        "sent_at": None,
        "customer_id": None,
        "session_id": None,
        "properties": None,
        "context": None,
        "anonymous_id": "anon-1",
    }
    result = accepted(body)
    assert result.occurred_at_ms == RECEIVED_AT_MS - 1_750
    assert (result.customer_id, result.properties, result.context) == (None, {}, {})


@pytest.mark.parametrize(
    "given_id",
    [
        "0F8FAD5B-D9CB-469F-A165-70867728950E",
        "0f8fad5bd9cb469fa16570867728950e",
        "0F8fad5bD9cb469FA16570867728950e",
        "0f8fad5b-d9cb469f-a165-70867728950e",
    ],
)
def test_event_id_is_canonical(given_id: str) -> None:
    assert accepted(event(event_id=given_id)).event_id == EVENT_ID


# Times


@pytest.mark.parametrize(
    ("occurred_at", "expected_ms"),
    [
        ("2024-05-01T11:59:58Z", RECEIVED_AT_MS - 2_000),
        ("2024-05-01T11:59:58.1239Z", RECEIVED_AT_MS - 1_877),
        ("2024-05-01T11:59:58.999999999Z", RECEIVED_AT_MS - 1_001),
        ("2024-05-01t11:59:58.5z", RECEIVED_AT_MS - 1_500),
        ("2024-05-01T13:59:58.250+02:00", RECEIVED_AT_MS - 1_750),
        ("2024-05-01T07:29:58.250-04:30", RECEIVED_AT_MS - 1_750),
        ("1970-01-01T00:00:00.0005Z", 0),
    ],
)
def test_times_are_utc_milliseconds_truncated(occurred_at: str, expected_ms: int) -> None:
    assert accepted(event(occurred_at=occurred_at)).occurred_at_ms == expected_ms


def test_event_times_before_1970_cannot_be_stored_and_are_rejected() -> None:
    result = rejected(event(occurred_at="1969-12-31T23:59:59.9995Z"), "invalid_field")
    assert "before 1970" in result.detail


def test_sent_at_corrects_a_client_clock_that_runs_ahead() -> None:
    # The client's clock is one hour fast: it says the event happened 2 s
    # before sending, and the broker received it at RECEIVED_AT_MS.
    body = event(occurred_at="2024-05-01T12:59:58.000Z", sent_at="2024-05-01T13:00:00.000Z")
    assert accepted(body).occurred_at_ms == RECEIVED_AT_MS - 2_000


def test_sent_at_corrects_a_client_clock_that_runs_behind() -> None:
    body = event(occurred_at="2024-04-30T12:00:00.000+00:00", sent_at="2024-04-30T12:00:30+00:00")
    assert accepted(body).occurred_at_ms == RECEIVED_AT_MS - 30_000


def test_correction_uses_truncated_milliseconds() -> None:
    body = event(occurred_at="2024-05-01T11:59:58.0009Z", sent_at="2024-05-01T12:00:00.0001Z")
    assert accepted(body).occurred_at_ms == RECEIVED_AT_MS - 2_000


def test_clock_skew_limit_is_inclusive() -> None:
    at_limit = accepted(event(occurred_at="2024-05-01T12:05:00.000Z"))
    assert at_limit.occurred_at_ms == RECEIVED_AT_MS + 300_000
    rejected(event(occurred_at="2024-05-01T12:05:00.001Z"), "future_timestamp")


def test_clock_skew_limit_is_configurable() -> None:
    body = event(occurred_at="2024-05-01T12:00:02Z")
    assert isinstance(run(body, max_clock_skew_ms=1_000), Rejected)
    assert isinstance(run(body, max_clock_skew_ms=2_000), Accepted)


def test_future_timestamp_is_judged_after_correction() -> None:
    # A phone whose clock is a day slow sends an event it says is from now:
    # corrected, it happened a day in the future.
    body = event(occurred_at="2024-04-30T12:00:00Z", sent_at="2024-04-29T12:00:00Z")
    rejected(body, "future_timestamp")
    # The same clock error without sent_at cannot be seen and is accepted as is.
    assert accepted(event(occurred_at="2024-04-30T12:00:00Z")).occurred_at_ms == (
        RECEIVED_AT_MS - 86_400_000
    )


# Rejections, in the order the checks apply


def test_reasons_are_the_documented_closed_set() -> None:
    assert REASONS == (
        "too_large",
        "invalid_json",
        "not_an_object",
        "unknown_schema_version",
        "missing_field",
        "unknown_type",
        "invalid_field",
        "future_timestamp",
        "too_late",
    )


def test_too_large_keeps_a_truncated_copy() -> None:
    raw = orjson.dumps(event(properties={"path": "/search", "dump": "x" * 70_000}))
    result = rejected(raw, "too_large")
    assert result.raw == raw[:65_536]
    assert result.truncated


def test_too_large_is_checked_before_parsing() -> None:
    result = check(b"\xff" * 11, RECEIVED_AT_MS, max_event_bytes=10)
    assert isinstance(result, Rejected)
    assert (result.reason, result.raw, result.truncated) == ("too_large", b"\xff" * 10, True)


def test_an_event_of_exactly_the_limit_is_not_too_large() -> None:
    raw = orjson.dumps(event())
    assert isinstance(check(raw, RECEIVED_AT_MS, max_event_bytes=len(raw)), Accepted)


@pytest.mark.parametrize(
    "raw",
    [
        orjson.dumps(event())[:-7],
        b"",
        b'{"event_id": "x", "source": "web",}',
        orjson.dumps(event()).replace(b"pricing", b"pr\xe9cing"),
        b'{"score": NaN}',
        b'{"message": "\\ud83d"}',
        b"{'source': 'web'}",
        b'{"source": "web"}\n{"source": "app"}',
    ],
    ids=[
        "cut",
        "empty",
        "trailing-comma",
        "latin-1",
        "nan",
        "lone-surrogate",
        "single-quotes",
        "two-lines",
    ],
)
def test_invalid_json(raw: bytes) -> None:
    result = rejected(raw, "invalid_json")
    assert (result.raw, result.truncated) == (raw, False)
    assert result.detail


@pytest.mark.parametrize("body", [[event(), event()], "page_view", 42, None, True])
def test_not_an_object(body: Any) -> None:
    rejected(body, "not_an_object")


@pytest.mark.parametrize("version", [2, 0, -1, 10**18])
def test_unknown_schema_version(version: int) -> None:
    rejected(event(schema_version=version), "unknown_schema_version")


def test_unknown_schema_version_comes_before_any_field_check() -> None:
    rejected({"schema_version": 2, "kind": "v2 envelope"}, "unknown_schema_version")


@pytest.mark.parametrize("version", ["1", "2", 1.0, True])
def test_a_schema_version_that_is_not_an_integer_is_invalid(version: Any) -> None:
    rejected(event(schema_version=version), "invalid_field")


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({k: v for k, v in event().items() if k != "event_id"}, "event_id"),
        (event() | {"occurred_at": None}, "occurred_at"),
        ({k: v for k, v in event().items() if k != "source"}, "source"),
        ({k: v for k, v in event().items() if k != "type"}, "type"),
        (event(customer_id=None, anonymous_id=None), "customer_id or anonymous_id"),
        (event() | {"customer_id": None, "anonymous_id": None}, "customer_id or anonymous_id"),
    ],
    ids=["event_id", "occurred_at-null", "source", "type", "no-identity", "null-identity"],
)
def test_missing_field(body: dict[str, Any], detail: str) -> None:
    assert detail in rejected(body, "missing_field").detail


def test_missing_field_comes_before_unknown_type() -> None:
    rejected(event(type="crash", event_id=None), "missing_field")


@pytest.mark.parametrize(
    ("source", "type_"),
    [("web", "crash"), ("app", "web_vital"), ("support", "purchase"), ("web", "PageView")],
)
def test_unknown_type(source: str, type_: str) -> None:
    result = rejected(event(source=source, type=type_), "unknown_type")
    assert type_ in result.detail


@pytest.mark.parametrize("type_", [7, ["page_view"], {"name": "page_view"}, ""])
def test_a_type_that_is_no_type_name_is_unknown(type_: Any) -> None:
    rejected(event(type=type_), "unknown_type")


def test_unknown_type_comes_before_invalid_field() -> None:
    rejected(event(type="crash", event_id="not-a-uuid", customer_id=""), "unknown_type")


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"event_id": "evt-123"}, "event_id: Input should be a UUID string"),
        ({"event_id": "{0f8fad5b-d9cb-469f-a165-70867728950e}"}, "event_id"),
        ({"event_id": "0f8fad5b-d9cb-469f-a165-70867728950e0"}, "event_id"),
        ({"event_id": "0f8fad5bd-9cb-469f-a165-70867728950e"}, "event_id"),
        ({"event_id": 12345}, "event_id"),
        ({"source": "email"}, "source: Input should be 'web', 'app' or 'support'"),
        ({"source": ["web"]}, "source"),
        ({"occurred_at": "2024-05-01T11:59:58"}, "occurred_at: Input should be an RFC 3339"),
        ({"occurred_at": 1714564798}, "occurred_at"),
        ({"occurred_at": "1714564798"}, "occurred_at"),
        ({"occurred_at": "2024-02-30T10:00:00Z"}, "occurred_at"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"occurred_at": "2024-05-01 11:59:58Z"}, "occurred_at"),
        ({"sent_at": "2024-05-01T12:00:00"}, "sent_at"),
        ({"customer_id": ""}, "customer_id: String should have at least 1 character"),
        ({"customer_id": "c" * 129}, "customer_id: String should have at most 128 characters"),
        ({"anonymous_id": 99}, "anonymous_id: Input should be a valid string"),
        ({"session_id": 17}, "session_id"),
        ({"context": {"country": "DE", "app_version": 3}}, "context.app_version"),
        ({"context": ["country", "DE"]}, "context"),
        ({"properties": ["/pricing"]}, "properties"),
        ({"properties": {"referrer": "x"}}, "properties.path: Field required"),
        ({"properties": {"path": 404}}, "properties.path: Input should be a valid string"),
    ],
)
def test_invalid_envelope_field(fields: dict[str, Any], detail: str) -> None:
    assert detail in rejected(event(**fields), "invalid_field").detail


@pytest.mark.parametrize(
    ("type_", "properties", "detail"),
    [
        (
            "csat_submitted",
            {"score": 6},
            "properties.score: Input should be less than or equal to 5",
        ),
        ("csat_submitted", {"score": 0}, "properties.score"),
        ("csat_submitted", {"score": 4.5}, "properties.score: Input should be a valid integer"),
        ("csat_submitted", {"score": "5"}, "properties.score"),
        ("csat_submitted", {"score": True}, "properties.score"),
        ("csat_submitted", {}, "properties.score: Field required"),
        ("nps_submitted", {"score": 11}, "properties.score"),
        ("nps_submitted", {"score": -1}, "properties.score"),
        ("ces_submitted", {"score": 0}, "properties.score"),
        ("ces_submitted", {"score": 8}, "properties.score"),
        ("ticket_opened", {"ticket": "T-1"}, "properties.ticket_id: Field required"),
        ("agent_reply", {"ticket_id": "T-1", "is_bot": "yes"}, "properties.is_bot"),
        ("ticket_resolved", {"ticket_id": 1001}, "properties.ticket_id"),
    ],
)
def test_invalid_support_properties(type_: str, properties: dict[str, Any], detail: str) -> None:
    body = event(source="support", type=type_, properties=properties)
    assert detail in rejected(body, "invalid_field").detail


@pytest.mark.parametrize(
    ("type_", "properties", "detail"),
    [
        (
            "purchase",
            {"order_id": "o-1", "revenue": -0.01, "currency": "EUR"},
            "properties.revenue",
        ),
        (
            "purchase",
            {"order_id": "o-1", "revenue": "9.99", "currency": "EUR"},
            "properties.revenue",
        ),
        ("purchase", {"order_id": "o-1", "revenue": 9.99}, "properties.currency: Field required"),
        ("web_vital", {"name": "FID", "value": 12}, "properties.name"),
        ("web_vital", {"name": "CLS", "value": -0.1}, "properties.value"),
        ("error", {"message": "boom", "fatal": "true"}, "properties.fatal"),
        ("add_to_cart", {"sku": 42}, "properties.sku"),
    ],
)
def test_invalid_web_properties(type_: str, properties: dict[str, Any], detail: str) -> None:
    body = event(type=type_, properties=properties)
    assert detail in rejected(body, "invalid_field").detail


def test_required_properties_cannot_be_left_out() -> None:
    rejected(event(type="purchase", properties=None), "invalid_field")


def test_invalid_field_comes_before_future_timestamp() -> None:
    rejected(event(occurred_at="2030-01-01T00:00:00Z", customer_id=""), "invalid_field")


def test_rejected_keeps_the_raw_message() -> None:
    raw = orjson.dumps(event(source="support", type="csat_submitted", properties={"score": 9}))
    result = rejected(raw, "invalid_field")
    assert (result.raw, result.truncated) == (raw, False)


def test_detail_stays_short_for_huge_inputs() -> None:
    body = event(type="x" * 50_000, source="web")
    assert len(rejected(body, "unknown_type").detail) <= 300
    # Nested deeper than Python's recursion limit, which repr() would hit.
    deep = orjson.dumps(event(type="TYPE")).replace(b'"TYPE"', b"[" * 1_010 + b"]" * 1_010)
    rejected(deep, "unknown_type")


# Never raises


def _outcome_is_valid(result: Accepted | Rejected, raw: bytes) -> None:
    if isinstance(result, Rejected):
        assert result.reason in REASONS
        assert result.reason != "too_late"  # decided by the stateful stage only
        assert result.raw == raw[:65_536]
        assert result.truncated == (len(raw) > 65_536)
    else:
        assert isinstance(result, Accepted)
        assert CANONICAL_UUID.fullmatch(result.event_id)
        assert 1 <= len(result.identity) <= 128
        assert result.occurred_at_ms - result.received_at_ms <= 300_000


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_check_never_raises_on_bytes(raw: bytes) -> None:
    _outcome_is_valid(check(raw, RECEIVED_AT_MS), raw)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_check_never_raises_on_json_values(value: Any) -> None:
    raw = orjson.dumps(value)
    _outcome_is_valid(check(raw, RECEIVED_AT_MS), raw)


envelope_values = st.one_of(
    json_values,
    st.sampled_from(
        [EVENT_ID, "web", "app", "support", "page_view", "purchase", "csat_submitted", NOW]
    ),
    st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat()),
)


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(st.sampled_from([*sorted(event()), "sent_at"]), envelope_values, max_size=6),
    st.sampled_from(sorted(PROPERTIES_MODELS)),
)
def test_check_never_raises_on_near_valid_events(
    changes: dict[str, Any], source_and_type: tuple[str, str]
) -> None:
    source, type_ = source_and_type
    body = event(source=source, type=type_, properties=EXAMPLE_PROPERTIES[type_]) | changes
    raw = orjson.dumps(body)
    _outcome_is_valid(check(raw, RECEIVED_AT_MS), raw)


def _first_error(exc: ValidationError) -> dict[str, Any]:
    """The first error, its context made comparable: exceptions compare by identity."""
    error = dict(exc.errors(include_url=False)[0])
    if "ctx" in error:
        error["ctx"] = {key: repr(value) for key, value in error["ctx"].items()}
    return error


def _outcome(model: type[BaseModel], body: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "valid", model.model_validate(body).model_dump()
    except ValidationError as exc:
        error = _first_error(exc)
        if error["type"] == "model_type":
            # The one intended difference: the wire has objects, not Python classes.
            return "invalid", {
                "type": "dict_type",
                "loc": error["loc"],
                "msg": "Input should be a valid dictionary",
                "input": error["input"],
            }
        return "invalid", error


def _dict_outcome(model: type[BaseModel], body: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "valid", dict_validator(model).validate_python(body)
    except ValidationError as exc:
        return "invalid", _first_error(exc)


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([*sorted(event()), "sent_at", "extra"]), envelope_values, max_size=6
    ),
    st.sampled_from([*sorted(PROPERTIES_MODELS), None]),
)
# Found by CI: an error whose context holds an exception (a model validator's).
@example({"customer_id": None, "anonymous_id": None}, ("app", "add_to_cart"))
def test_dict_validators_judge_exactly_as_the_models(
    changes: dict[str, Any], source_and_type: tuple[str, str] | None
) -> None:
    """What the bulk stage validates with, against the contract's models: same verdict,
    same first error, same values (properties included, as the model dumps them)."""
    if source_and_type is None:
        model: type[BaseModel] = TouchpointEvent
        body = event() | changes
    else:
        source, type_ = source_and_type
        model = EVENT_MODELS[source, type_]
        body = event(source=source, type=type_, properties=EXAMPLE_PROPERTIES[type_]) | changes
    assert _dict_outcome(model, body) == _outcome(model, body)


def test_dict_validator_keeps_a_fields_plain_validator() -> None:
    class Shouted(BaseModel):
        word: Annotated[str, PlainValidator(lambda value: str(value).upper())]

    assert dict_validator(Shouted).validate_python({"word": "hi"}) == {"word": "HI"}


def test_dict_validator_refuses_a_validator_that_needs_an_instance() -> None:
    class Checked(BaseModel):
        low: int
        high: int

        @model_validator(mode="after")
        def _ordered(self) -> Checked:
            if self.low > self.high:
                raise ValueError("low above high")
            return self

    with pytest.raises(TypeError, match="needs an instance"):
        dict_validator(Checked)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**50), st.integers(min_value=-(2**40), max_value=2**40))
def test_check_never_raises_on_extreme_clocks(received_at_ms: int, skew_ms: int) -> None:
    body = event(occurred_at="0001-01-01T00:00:00+23:59", sent_at="9999-12-31T23:59:59.999-23:59")
    result = check(orjson.dumps(body), received_at_ms, max_clock_skew_ms=abs(skew_ms))
    assert isinstance(result, Accepted | Rejected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T12:00:00.1239Z", RECEIVED_AT_MS + 123),
        ("2024-05-01T14:00:00+02:00", RECEIVED_AT_MS),
        ("2024-05-01T12:00:00", None),
        ("2024-05-01 12:00:00Z", None),
        (1_714_564_800, None),
        (None, None),
    ],
)
def test_timestamp_ms_reads_times_like_check(value: object, expected: int | None) -> None:
    assert timestamp_ms(value) == expected
