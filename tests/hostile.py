"""Hostile touchpoint messages, each with the outcome docs/semantics.md promises for it.

Shared by the property tests of the decoder (tests/unit/test_hostile_decoder.py) and
of the sink (tests/integration/test_hostile_input.py). Every message is built from a
JSON-like document by code of its own (not by the pipeline's serialiser), so the tests
know by construction which reason the contract gives it, or, for an event it must
accept, what the stored row has to hold. Asserting only "it did not crash" would let a
decoder that rejects everything pass.

Event ids are placeholders filled in at render time from a salt: the whole test
session shares one chDB engine and `xp.events` collapses rows by event id, so every
integration example needs ids no other example uses.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from aiokafka import ConsumerRecord
from hypothesis import strategies as st

from pipeline import journey
from pipeline.bulk import MAX_BATCH_BYTES, Batcher
from pipeline.clickhouse import DUPLICATE_COLUMNS, EVENT_COLUMNS, REJECTED_COLUMNS, Row
from pipeline.config import Settings
from pipeline.processor import Outcome, PartitionState
from schemas.events import PROPERTIES_MODELS, RFC3339_PATTERN, UUID_PATTERN

#: 2029-03-07T05:11:00Z, the Kafka timestamp (`received_at`) of the messages. Accepted
#: events count into the minute rows of their real channels (web, app, support); a time
#: no other test uses keeps those rows from mixing with other tests' in the shared chDB.
RECEIVED_MS = 1_867_554_660_000
MAX_EVENT_BYTES = 65_536
#: The documented limits the cases are built around (docs/semantics.md section 1).
MAX_PROPERTIES_DEPTH = 64
MAX_JSON_DEPTH = 1_024
MAX_CLOCK_SKEW_MS = 300_000

ANY_REASON = "*"
"""A case the contract rejects, for a reason that depends on bytes chosen at random."""

STATELESS_REASONS = (
    "too_large",
    "invalid_json",
    "not_an_object",
    "unknown_schema_version",
    "missing_field",
    "unknown_type",
    "invalid_field",
    "future_timestamp",
)

# --- strings ------------------------------------------------------------------------

INJECTIONS = (
    "'); DROP TABLE xp.events; --",
    "'; DROP TABLE xp.rejected_events_store; --",
    '"; DROP DATABASE xp; --',
    "' OR '1'='1",
    "1; TRUNCATE TABLE xp.events_store",
    "SETTINGS max_threads=1",
    " SETTINGS readonly=0, max_memory_usage=1",
    "FORMAT JSONEachRow",
    "INTO OUTFILE '/tmp/xp-pwned'",
    "x') UNION ALL SELECT name FROM system.users --",
    "{name:String}",
    "{event_id:UUID}",
    "{{ name }}",
    "${segment:singlequote}",
    "$__timeFilter(occurred_at)",
    "%s",
    "%(name)s",
    "?",
    ":name",
    "\\",
    "\\\\'",
    "\\'",
    "'",
    '"',
    "`",
    "\\N",
    "NULL",
    "null",
    "\\0",
    "/* */",
    "-- ",
    "#",
)
UNICODE_EDGES = (
    "",
    "\x00",
    "a\x00b",
    "\x01\x1f\x7f",
    "\n\r\t",
    "\u2028\u2029",
    "e\u0301",  # combining acute accent
    "Z\u0335\u0321\u031bal\u0338g\u0336o\u0337",  # stacked combining marks
    "\u05e9\u05dc\u05d5\u05dd",  # Hebrew, right to left
    "\u202eevil\u202c",  # right-to-left override
    "\u200b\u200c\u200d\u2060\ufeff",  # zero width characters and a BOM
    "\uffff",
    "\ufffe",
    "\ufffd",
    "\U0010ffff",
    "\U000e0001",  # a tag character
    "\U0001f600",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467",  # a ZWJ family
    "\U0001f1e7\U0001f1f7",  # a flag
    "\uff21",  # fullwidth A
    "\u0130",  # dotted capital I
    "\u0663",  # Arabic-Indic digit three
    "\u00df",
)

hostile_text: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(INJECTIONS + UNICODE_EDGES),
    st.lists(st.sampled_from(INJECTIONS + UNICODE_EDGES), min_size=2, max_size=3).map("".join),
    st.text(max_size=12),  # any code point but lone surrogates, which str cannot carry to UTF-8
)
"""Strings that break naive SQL building, escaping, or text handling."""

identifiers = hostile_text.filter(lambda s: 1 <= len(s) <= 128) | hostile_text.map(
    lambda s: ((s or "x") * 128)[:128]
)
"""Valid customer and anonymous ids: 1 to 128 characters (the limit included), any text."""

# --- JSON values --------------------------------------------------------------------

_U64_MAX = 2**64 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_I64_MIN = -(2**63)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, _I64_MIN, _I64_MIN - 1, 2**63, _U64_MAX, _U64_MAX + 1, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([-0.0, 5e-324, 1.7976931348623157e308, 1e-300]),
    hostile_text,
)
# Nested a few levels, built without st.recursive: its retries when a draw grows past
# max_leaves made generation several times slower. Deep nesting has cases of its own.
_json_lists = st.lists(json_scalars, max_size=3)
json_values: st.SearchStrategy[Any] = st.one_of(
    json_scalars,
    _json_lists,
    st.dictionaries(hostile_text, json_scalars | _json_lists, max_size=3),
    st.lists(st.dictionaries(hostile_text, json_scalars, max_size=2), max_size=2),
)


def parsed(value: Any) -> Any:
    """`value` as JSON parsers in the pipeline read it back.

    JSON does not bound integers; xp reads the ones outside 64 bits as the nearest
    double (docs/semantics.md section 1), so that is what a stored event holds.
    """
    if type(value) is int and not _I64_MIN <= value <= _U64_MAX:
        return float(value)
    if type(value) is list:
        return [parsed(v) for v in value]
    if type(value) is dict:
        return {k: parsed(v) for k, v in value.items()}
    if type(value) is Pairs:
        return {k: parsed(v) for k, v in value.items}
    return value


# --- documents ----------------------------------------------------------------------


@dataclass(frozen=True)
class EventId:
    """Where the event id goes; rendered from the salt and this number."""

    style: str = "canonical"


@dataclass(frozen=True)
class Pairs:
    """A JSON object written with exactly these keys in this order, repeats included."""

    items: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Deep:
    """`depth` nested arrays (or objects), written without recursion."""

    depth: int
    objects: bool = False


@dataclass(frozen=True)
class Verbatim:
    """Bytes spliced into the JSON text as they are: NaN, raw control bytes, bad UTF-8."""

    text: bytes


def canonical_id(salt: int, number: int) -> str:
    return str(uuid.UUID(int=(salt * 2**20 + number) % 2**128))


def _id_text(salt: int, number: int, style: str) -> str:
    text = canonical_id(salt, number)
    if style == "upper":
        return text.upper()
    if style == "bare":
        return text.replace("-", "")
    if style == "bare-upper":
        return text.replace("-", "").upper()
    return text


def _dump(value: Any, out: list[bytes], ascii_only: bool, salt: int, number: int) -> None:
    if type(value) is EventId:
        out.append(json.dumps(_id_text(salt, number, value.style)).encode())
    elif type(value) is Verbatim:
        out.append(value.text)
    elif type(value) is Deep:
        opening, closing = (b'{"d":', b"}") if value.objects else (b"[", b"]")
        out.append(
            opening * value.depth + (b"null" if value.objects else b"") + closing * value.depth
        )
    elif type(value) in (dict, Pairs):
        items = value.items if type(value) is Pairs else tuple(value.items())
        out.append(b"{")
        for i, (key, item) in enumerate(items):
            if i:
                out.append(b",")
            out.append(json.dumps(key, ensure_ascii=ascii_only).encode())
            out.append(b":")
            _dump(item, out, ascii_only, salt, number)
        out.append(b"}")
    elif type(value) is list:
        out.append(b"[")
        for i, item in enumerate(value):
            if i:
                out.append(b",")
            _dump(item, out, ascii_only, salt, number)
        out.append(b"]")
    else:
        # Standard-library JSON: exact big integers and shortest float repr.
        out.append(json.dumps(value, ensure_ascii=ascii_only, allow_nan=False).encode())


# --- cases --------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What an accepted event must store (None: the field is absent or null)."""

    source: str
    type: str
    customer_id: str | None
    anonymous_id: str | None
    session_id: str | None
    properties: dict[str, Any]
    context: dict[str, str]

    @property
    def identity(self) -> str:
        identity = self.customer_id if self.customer_id is not None else self.anonymous_id
        assert identity is not None
        return identity


@dataclass(frozen=True)
class Case:
    """One message and what the contract says becomes of it.

    `reason` is None for an event the pipeline must accept (then `expected` says what it
    stores), a reason code, or ANY_REASON. `number` picks the event id; two accepted
    cases with one number are one event sent twice, the second a duplicate.
    """

    label: str
    doc: Any
    reason: str | None
    expected: Expected | None = None
    number: int = 0
    ascii_only: bool = False
    prefix: bytes = b""
    suffix: bytes = b""
    cut: int | None = None
    size: int | None = None
    received_ms: int = RECEIVED_MS
    raw: bytes | None = field(default=None, repr=False)

    def render(self, salt: int) -> bytes:
        if self.raw is not None:
            return self.raw
        out: list[bytes] = []
        _dump(self.doc, out, self.ascii_only, salt, self.number)
        body = self.prefix + b"".join(out) + self.suffix
        if self.size is not None:
            # Grow the `pad` property (rendered empty) to hit the size exactly.
            assert body.count(b'"pad":""') == 1, "sized cases carry one empty pad property"
            body = body.replace(b'"pad":""', b'"pad":"' + b"x" * (self.size - len(body)) + b'"')
            assert len(body) == self.size
        if self.cut is not None:
            body = body[: self.cut]
        return body

    def event_id(self, salt: int) -> str:
        return canonical_id(salt, self.number)


def _timestamp(ms: int, offset_min: int, digits: int, lower: bool) -> str:
    """An RFC 3339 time for `ms` in an offset, with `digits` fraction digits."""
    zone = timezone(timedelta(minutes=offset_min))
    moment = (_EPOCH + timedelta(milliseconds=ms)).astimezone(zone)
    text = f"{moment:%Y-%m-%dT%H:%M:%S}"
    millis = ms % 1000
    if digits:
        text += "." + (f"{millis:03d}" + "7" * digits)[:digits]
    if offset_min == 0:
        text += "Z"
    else:
        sign = "+" if offset_min > 0 else "-"
        text += f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    return text.lower() if lower else text


timestamps_near_received = st.builds(
    _timestamp,
    st.integers(min_value=RECEIVED_MS - 600_000, max_value=RECEIVED_MS),
    st.sampled_from([0, 0, 60, 330, -300, 23 * 60 + 59, -(23 * 60 + 59)]),
    st.sampled_from([0, 3, 6, 9, 25]),
    st.booleans(),
)
"""Event times at most 10 minutes before `received_at`: never future, never too late."""


def _text_or_absent(draw: st.DrawFn) -> str | None:
    return draw(st.none() | hostile_text)


_SIMPLE_PROPERTIES: dict[str, Any] = {
    "signup": {},
    "checkout_started": {},
    "app_install": {},
    "app_open": {},
    "tap": {},
    "chat_started": {},
}
_VITALS = ("LCP", "INP", "CLS", "FCP", "TTFB")


@st.composite
def declared_properties(draw: st.DrawFn, type_: str) -> dict[str, Any]:
    """Valid declared properties of `type_`, with hostile strings wherever a string goes."""
    finite = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53)
    non_negative = st.floats(min_value=0, allow_infinity=False) | st.integers(0, 2**53)
    optional: dict[str, Any] = {}
    if type_ in _SIMPLE_PROPERTIES:
        return {}
    if type_ == "page_view":
        props: dict[str, Any] = {"path": draw(hostile_text)}
        optional["referrer"] = _text_or_absent(draw)
    elif type_ == "click":
        props, optional["target"] = {}, _text_or_absent(draw)
    elif type_ == "search":
        props, optional["query"] = {}, _text_or_absent(draw)
    elif type_ == "add_to_cart":
        props = {}
        optional["sku"] = _text_or_absent(draw)
        optional["value"] = draw(st.none() | finite)
    elif type_ == "purchase":
        props = {
            "order_id": draw(hostile_text),
            "revenue": draw(non_negative),
            "currency": draw(hostile_text),
        }
    elif type_ == "web_vital":
        props = {"name": draw(st.sampled_from(_VITALS)), "value": draw(non_negative)}
    elif type_ in ("error", "crash"):
        props, optional["message"] = {}, _text_or_absent(draw)
        if type_ == "error":
            optional["fatal"] = draw(st.none() | st.booleans())
    elif type_ == "screen_view":
        props = {"screen": draw(hostile_text)}
    elif type_ in ("ticket_opened", "ticket_resolved", "ticket_reopened", "agent_reply"):
        props = {"ticket_id": draw(hostile_text)}
        if type_ == "agent_reply":
            optional["is_bot"] = draw(st.none() | st.booleans())
    else:
        low, high = {"csat_submitted": (1, 5), "nps_submitted": (0, 10), "ces_submitted": (1, 7)}[
            type_
        ]
        props = {"score": draw(st.integers(low, high))}
    for key, value in optional.items():
        if draw(st.booleans()):
            props[key] = value  # present, possibly null; absent otherwise
    return props


SOURCES_AND_TYPES = sorted(PROPERTIES_MODELS)
_ENVELOPE = (
    "event_id",
    "schema_version",
    "source",
    "type",
    "occurred_at",
    "sent_at",
    "customer_id",
    "anonymous_id",
    "session_id",
    "properties",
    "context",
)


@st.composite
def valid_events(draw: st.DrawFn) -> Case:
    """An event the contract accepts, with hostile text in every string it carries.

    Hostile strings go into ids, session ids, declared properties, property names,
    extra property values, context keys and values, and unknown top-level keys.
    """
    source, type_ = draw(st.sampled_from(SOURCES_AND_TYPES))
    declared = set(PROPERTIES_MODELS[source, type_].model_fields)
    props = draw(declared_properties(type_))
    extras = draw(
        st.dictionaries(
            hostile_text.filter(lambda key: key not in declared), json_values, max_size=3
        )
    )
    props.update(extras)
    who = draw(st.sampled_from(["customer", "anonymous", "both"]))
    customer = draw(identifiers) if who != "anonymous" else None
    anonymous = draw(identifiers) if who != "customer" else None
    session = draw(st.none() | hostile_text | hostile_text.map(lambda s: (s or "s") * 300))
    context = draw(st.none() | st.dictionaries(hostile_text, hostile_text, max_size=4))
    occurred_at = draw(timestamps_near_received)
    doc: dict[str, Any] = {
        "event_id": EventId(draw(st.sampled_from(["canonical", "upper", "bare", "bare-upper"]))),
        "source": source,
        "type": type_,
        "occurred_at": occurred_at,
    }
    keep_empty = draw(st.booleans())
    optional: dict[str, Any] = {
        "schema_version": draw(st.sampled_from([1, None])),
        "sent_at": draw(st.none() | st.just(occurred_at)),
        "customer_id": customer,
        "anonymous_id": anonymous,
        "session_id": session,
        "properties": props if props or keep_empty else None,
        "context": context,
    }
    for key, value in optional.items():
        if value is not None or draw(st.booleans()):
            doc[key] = value  # null counts as absent, so both must be accepted
    unknown = draw(
        st.dictionaries(
            hostile_text.filter(lambda key: key not in _ENVELOPE), json_values, max_size=1
        )
    )
    doc.update(unknown)
    order = draw(st.permutations(list(doc)))
    expected = Expected(
        source=source,
        type=type_,
        customer_id=customer,
        anonymous_id=anonymous,
        session_id=session,
        properties=parsed(props),
        context=context or {},
    )
    return Case(
        f"valid {source}/{type_}",
        {key: doc[key] for key in order},
        None,
        expected,
        ascii_only=draw(st.booleans()),
    )


def _not_a_timestamp(value: Any) -> bool:
    return value is not None and not (type(value) is str and re.match(RFC3339_PATTERN, value))


def _not_a_uuid(value: Any) -> bool:
    return value is not None and not (type(value) is str and re.match(UUID_PATTERN, value))


def _is_source(value: Any) -> bool:
    return type(value) is str and value in _TYPES_OF


def _invalid_identifier(value: Any) -> bool:
    return value is not None and (type(value) is not str or not 1 <= len(value) <= 128)


_TYPES_OF = {
    source: {t for s, t in SOURCES_AND_TYPES if s == source} for source, _ in SOURCES_AND_TYPES
}


BREAKS: tuple[str, ...] = (
    "event_id",
    "event_id-null",
    "source",
    "source-null",
    "type",
    "occurred_at",
    "occurred_at-null",
    "sent_at",
    "customer_id",
    "anonymous_id",
    "no-identity",
    "session_id",
    "properties",
    "context",
    "context-value",
    "schema_version",
    "schema_version-type",
    "declared-property",
)
"""What `broken_events` breaks, one field or rule each."""


@st.composite
def broken_events(draw: st.DrawFn, kind: str | None = None) -> Case:
    """A valid event with one field broken, and the reason that breakage must get.

    Covers a wrong type or value for every envelope field and for declared properties,
    in the order of docs/semantics.md section 1.
    """
    case = draw(valid_events())
    doc = dict(case.doc)
    source, type_ = doc["source"], doc["type"]
    wrong = json_values | st.sampled_from([[], {}, True, 1.0, "", 0])
    choice = kind if kind is not None else draw(st.sampled_from(BREAKS))
    reason = "invalid_field"
    if choice == "event_id":
        doc["event_id"] = draw(wrong.filter(_not_a_uuid))
    elif choice == "event_id-null":
        doc["event_id"], reason = None, "missing_field"
    elif choice == "source":
        doc["source"] = draw(wrong.filter(lambda v: v is not None and not _is_source(v)))
    elif choice == "source-null":
        del doc["source"]
        reason = "missing_field"
    elif choice == "type":
        doc["type"] = draw(
            wrong.filter(
                lambda v: v is not None and not (type(v) is str and v in _TYPES_OF[source])
            )
        )
        reason = "unknown_type"
    elif choice == "occurred_at":
        doc["occurred_at"] = draw(
            wrong.filter(_not_a_timestamp)
            | st.sampled_from(
                [
                    "2026-01-01T00:00:00",  # no offset
                    "2026-01-01 00:00:00Z",
                    "2025-02-29T00:00:00Z",
                    "2025-12-31T24:00:00Z",
                    "2025-12-31T23:59:60Z",
                    "2025-12-31T23:00:00+24:00",
                    "2025-12-31T23:00:00Z\n",
                    "\uff12025-12-31T23:00:00Z",
                    "1767225600",
                ]
            )
        )
    elif choice == "occurred_at-null":
        doc["occurred_at"], reason = None, "missing_field"
    elif choice == "sent_at":
        doc["sent_at"] = draw(wrong.filter(_not_a_timestamp))
    elif choice in ("customer_id", "anonymous_id"):
        other = "anonymous_id" if choice == "customer_id" else "customer_id"
        doc[other] = "someone"
        doc[choice] = draw(
            wrong.filter(_invalid_identifier) | hostile_text.map(lambda s: (s or "i") * 129)
        )
    elif choice == "no-identity":
        doc.pop("customer_id", None)
        doc["anonymous_id"] = None
        reason = "missing_field"
    elif choice == "session_id":
        doc["session_id"] = draw(wrong.filter(lambda v: v is not None and type(v) is not str))
    elif choice == "properties":
        doc["properties"] = draw(wrong.filter(lambda v: v is not None and type(v) is not dict))
    elif choice == "context":
        doc["context"] = draw(wrong.filter(lambda v: v is not None and type(v) is not dict))
    elif choice == "context-value":
        bad = draw(st.none() | wrong.filter(lambda v: type(v) is not str))
        doc["context"] = {**(doc.get("context") or {}), draw(hostile_text): bad}
    elif choice == "schema_version":
        doc["schema_version"] = draw(
            st.integers(min_value=_I64_MIN, max_value=_U64_MAX).filter(lambda v: v != 1)
        )
        reason = "unknown_schema_version"
    elif choice == "schema_version-type":
        doc["schema_version"] = draw(
            wrong.filter(lambda v: v is not None and type(v) is not int) | st.just(1.0)
        )
    else:
        required = {
            "page_view": "path",
            "purchase": draw(st.sampled_from(["order_id", "revenue", "currency"])),
            "web_vital": draw(st.sampled_from(["name", "value"])),
            "screen_view": "screen",
            "ticket_opened": "ticket_id",
            "ticket_resolved": "ticket_id",
            "ticket_reopened": "ticket_id",
            "agent_reply": "ticket_id",
            "csat_submitted": "score",
            "nps_submitted": "score",
            "ces_submitted": "score",
        }.get(type_)
        if required is None:
            doc["context"] = {"k": 5}  # no declared property to break: break the context
        else:
            props = dict(doc.get("properties") or {})
            if draw(st.booleans()):
                props.pop(required, None)  # absent
            else:
                # Strict types: "5" and 5.0 are not scores, true is not a number.
                bad = {
                    "score": st.sampled_from(["5", 5.0, True, -1, 11, 2**64, None]),
                    "revenue": st.sampled_from(["1", -0.01, -1, True, None, []]),
                    "value": st.sampled_from(["1", -1, -1e-9, False, None, {}]),
                    "name": st.sampled_from(["lcp", "FID", "", 1, None]),
                }.get(required, st.sampled_from([5, None, True, [], {}, 1.5]))
                props[required] = draw(bad)
            doc["properties"] = props
    return replace(case, label=f"{choice} broken", doc=doc, reason=reason, expected=None)


def _with_property(case: Case, key: str, value: Any) -> Case:
    doc = dict(case.doc)
    doc["properties"] = {**(doc.get("properties") or {}), key: value}
    return replace(case, doc=doc)


def with_deep_property(case: Case, depth: int, objects: bool) -> Case:
    """`case` with a property `depth` arrays (or objects) deep, and the outcome that gets."""
    assert case.expected is not None
    deep = _with_property(case, "deep", Deep(depth, objects))
    label = f"deep-property {depth}{' objects' if objects else ''}"
    if len(deep.render(0)) > MAX_EVENT_BYTES:  # 10,000 objects take 60 KB on their own
        return replace(deep, label=label, reason="too_large", expected=None)
    # The envelope is one level, properties a second, `deep` adds `depth` more.
    if 2 + depth > MAX_JSON_DEPTH:
        return replace(deep, label=label, reason="invalid_json", expected=None)
    if 1 + depth > MAX_PROPERTIES_DEPTH:
        return replace(deep, label=label, reason="invalid_field", expected=None)
    value: Any = None if objects else []
    for _ in range(depth if objects else depth - 1):
        value = {"d": value} if objects else [value]
    props = {**case.expected.properties, "deep": value}
    return replace(deep, label=label, expected=replace(case.expected, properties=props))


def plain_case(number: int, customer: str = "someone", **properties: Any) -> Case:
    """A valid page view with these extra properties, for tests that build cases by hand."""
    props = {"path": "/", **properties}
    doc = {
        "event_id": EventId(),
        "source": "web",
        "type": "page_view",
        "occurred_at": _timestamp(RECEIVED_MS - 60_000, 0, 3, False),
        "customer_id": customer,
        "properties": props,
    }
    expected = Expected("web", "page_view", customer, None, None, parsed(props), {})
    return Case("plain page view", doc, None, expected, number=number)


MALFORMATIONS: tuple[str, ...] = (
    "bom",
    "raw-control",
    "lone-surrogate",
    "surrogate-pair",
    "bad-utf8",
    "non-finite",
    "deep-property",
    "deep-document",
    "duplicate-keys",
    "truncated",
    "trailing",
    "whitespace",
    "size",
)
"""What `malformed_messages` does to the bytes of a valid event."""


@st.composite
def malformed_messages(draw: st.DrawFn, kind: str | None = None) -> Case:
    """A message whose trouble is in its bytes: encoding, nesting, size, duplicate keys."""
    case = draw(valid_events())
    assert case.expected is not None
    kind = kind if kind is not None else draw(st.sampled_from(MALFORMATIONS))
    if kind == "bom":
        return replace(case, label=kind, prefix=b"\xef\xbb\xbf", reason="invalid_json")
    if kind == "raw-control":
        byte = draw(st.sampled_from([b"\x00", b"\x01", b"\n", b"\x1f"]))
        bad = _with_property(case, "note", Verbatim(b'"a' + byte + b'b"'))
        return replace(bad, label=kind, reason="invalid_json", expected=None)
    if kind == "lone-surrogate":
        escape = draw(st.sampled_from([rb'"\ud800"', rb'"\udfff"', rb'"x\ud83d"', rb'"\ud83dx"']))
        bad = _with_property(case, "note", Verbatim(escape))
        return replace(bad, label=kind, reason="invalid_json", expected=None)
    if kind == "surrogate-pair":
        # An escaped pair is one astral character: valid, and stored as that character.
        good = _with_property(case, "note", Verbatim(rb'"\ud83d\ude00\u0000\u202e"'))
        props = {**case.expected.properties, "note": "\U0001f600\x00\u202e"}
        return replace(good, label=kind, expected=replace(case.expected, properties=props))
    if kind == "bad-utf8":
        text = draw(
            st.sampled_from(
                [b"\xff", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"]
            )
        )
        bad = _with_property(case, "note", Verbatim(b'"' + text + b'"'))
        return replace(bad, label=kind, reason="invalid_json", expected=None)
    if kind == "non-finite":
        literal = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"]))
        bad = _with_property(case, "n", Verbatim(literal))
        return replace(bad, label=kind, reason="invalid_json", expected=None)
    if kind == "deep-property":
        depth = draw(
            st.sampled_from([1, 62, 63, 64, 65, 100, 253, 254, 255, 1021, 1022, 1023, 10_000])
        )
        return with_deep_property(case, depth, draw(st.booleans()))
    if kind == "deep-document":
        depth = draw(st.sampled_from([1, 1023, 1024, 1025, 10_000]))
        objects = draw(st.booleans())
        if depth > MAX_JSON_DEPTH:
            reason = "invalid_json"
        else:
            reason = "missing_field" if objects else "not_an_object"
        return Case(f"{kind} {depth}", Deep(depth, objects), reason)
    if kind == "duplicate-keys":
        # The last of a repeated key counts, as in every mainstream JSON parser.
        bad_first = draw(st.booleans())
        field_name = draw(st.sampled_from(["event_id", "source", "occurred_at", "properties"]))
        good = case.doc.get(field_name, {})
        wrong = {"event_id": "not-a-uuid", "source": "fax", "occurred_at": 0, "properties": 7}
        items = [(k, v) for k, v in case.doc.items() if k != field_name]
        pair = [(field_name, wrong[field_name]), (field_name, good)]
        if not bad_first:
            pair.reverse()
        doc = Pairs((*items, *pair))
        if bad_first:
            expected = case.expected
            if field_name == "properties":
                expected = replace(case.expected, properties=parsed(good) or {})
            return replace(case, label=kind, doc=doc, expected=expected)
        return replace(case, label=kind, doc=doc, reason="invalid_field", expected=None)
    if kind == "truncated":
        length = len(case.render(0))
        cut = draw(st.integers(min_value=0, max_value=length - 1))
        return replace(case, label=kind, cut=cut, reason="invalid_json", expected=None)
    if kind == "trailing":
        junk = draw(st.sampled_from([b"x", b"}", b",", b"{}", b"\x00", b"\xff"]))
        return replace(case, label=kind, suffix=junk, reason="invalid_json", expected=None)
    if kind == "whitespace":
        # JSON allows whitespace around the value.
        return replace(case, label=kind, prefix=b" \t\r\n", suffix=b"\n \t")
    size = draw(
        st.sampled_from([MAX_EVENT_BYTES - 1, MAX_EVENT_BYTES, MAX_EVENT_BYTES + 1, 200_000])
    )
    padded = _with_property(case, "pad", "")
    if size > MAX_EVENT_BYTES:
        return replace(padded, label=f"{kind} {size}", size=size, reason="too_large", expected=None)
    props = {**case.expected.properties, "pad": ""}  # filled in by `expected_for`
    return replace(
        padded,
        label=f"{kind} {size}",
        size=size,
        expected=replace(case.expected, properties=props),
    )


TIME_TROUBLES = (
    "future",
    "sent-ahead",
    "before-1970",
    "after-2106",
    "received-far-ahead",
    "no-ts",
)


@st.composite
def time_troubles(draw: st.DrawFn, kind: str | None = None) -> Case:
    """Clock skew and times ClickHouse cannot store, decided after every field check."""
    case = draw(valid_events())
    doc = dict(case.doc)
    kind = kind if kind is not None else draw(st.sampled_from(TIME_TROUBLES))
    if kind == "future":
        ahead = draw(st.integers(MAX_CLOCK_SKEW_MS + 1, 10**12))
        doc["occurred_at"] = _timestamp(RECEIVED_MS + ahead, 0, 3, False)
        doc.pop("sent_at", None)
        return replace(case, label=kind, doc=doc, reason="future_timestamp", expected=None)
    if kind == "sent-ahead":
        # The client's clock is behind: the correction moves the event into the future.
        behind = draw(st.integers(MAX_CLOCK_SKEW_MS + 1, 10**11))
        doc["sent_at"] = _timestamp(RECEIVED_MS - behind, 0, 3, False)
        doc["occurred_at"] = _timestamp(RECEIVED_MS, 0, 3, False)
        return replace(case, label=kind, doc=doc, reason="future_timestamp", expected=None)
    if kind == "before-1970":
        doc["occurred_at"] = draw(
            st.sampled_from(["1969-12-31T23:59:59.999Z", "0001-01-01T00:00:00+23:59"])
        )
        doc.pop("sent_at", None)
        return replace(case, label=kind, doc=doc, reason="invalid_field", expected=None)
    if kind == "after-2106":
        # A record timestamp that late (a forged backfill `received_at`) lets such a time
        # past the skew check; ClickHouse's DateTime minute rows end in 2106.
        received = draw(st.sampled_from([4_294_967_296_000, 7_258_118_400_000, 2**62]))
        doc["occurred_at"] = _timestamp(min(received, 253_402_300_799_000), 0, 3, False)
        doc.pop("sent_at", None)
        return replace(
            case, label=kind, doc=doc, reason="invalid_field", expected=None, received_ms=received
        )
    if kind == "received-far-ahead":
        # A forged record timestamp alone changes nothing but the stored received_at.
        doc.pop("sent_at", None)
        return replace(case, label=kind, doc=doc, received_ms=253_402_300_799_000)
    # A record without a timestamp (-1): every event time is ahead of it.
    doc.pop("sent_at", None)
    return replace(
        case, label=kind, doc=doc, reason="future_timestamp", expected=None, received_ms=-1
    )


non_objects = st.builds(
    lambda value, ascii_only: Case("not an object", value, "not_an_object", ascii_only=ascii_only),
    json_values.filter(lambda v: type(v) is not dict),
    st.booleans(),
)
arbitrary_bytes = st.binary(max_size=400).map(lambda raw: Case("bytes", None, ANY_REASON, raw=raw))

KINDS: tuple[tuple[str, str | None], ...] = (
    ("valid", None),
    *(("broken", kind) for kind in BREAKS),
    *(("malformed", kind) for kind in MALFORMATIONS),
    *(("time", kind) for kind in TIME_TROUBLES),
    ("not an object", None),
    ("bytes", None),
)
"""Every family and kind of case, so that a test can give each its own examples."""


def cases_of(family: str, kind: str | None = None) -> st.SearchStrategy[Case]:
    """The cases of one family (and kind), as listed in KINDS."""
    if family == "valid":
        return valid_events()
    if family == "broken":
        return broken_events(kind)
    if family == "malformed":
        return malformed_messages(kind)
    if family == "time":
        return time_troubles(kind)
    return non_objects if family == "not an object" else arbitrary_bytes


single_cases: st.SearchStrategy[Case] = st.sampled_from(KINDS).flatmap(
    lambda family_kind: cases_of(*family_kind)
)
"""Any one hostile message, of any kind in KINDS."""


@st.composite
def case_lists(draw: st.DrawFn, max_size: int = 12) -> list[Case]:
    """Messages in the order they arrive, with numbered ids and some events sent twice."""
    cases: list[Case] = []
    for number, case in enumerate(draw(st.lists(single_cases, min_size=1, max_size=max_size))):
        cases.append(replace(case, number=number))
        if case.reason is None and draw(st.integers(0, 3)) == 0:
            # The same event again, its id written another way: still the same event.
            style = draw(st.sampled_from(["canonical", "upper", "bare", "bare-upper"]))
            doc = _restyled(case.doc, style)
            cases.append(replace(case, number=number, doc=doc, label="resent " + case.label))
    return cases


@st.composite
def one_of_each_kind(draw: st.DrawFn, kinds: tuple[tuple[str, str | None], ...]) -> list[Case]:
    """A message of each of `kinds`, numbered, in a random order.

    Take KINDS a group at a time (KIND_GROUPS): one example of all of them is more
    data than hypothesis lets an example draw.
    """
    cases = [replace(draw(cases_of(*kind)), number=i) for i, kind in enumerate(kinds)]
    return draw(st.permutations(cases))


KIND_GROUPS = tuple(KINDS[i : i + 8] for i in range(0, len(KINDS), 8))


def _restyled(doc: Any, style: str) -> Any:
    if type(doc) is Pairs:
        return Pairs(tuple((k, _restyled(v, style)) for k, v in doc.items))
    if type(doc) is dict:
        return {k: _restyled(v, style) for k, v in doc.items()}
    return EventId(style) if type(doc) is EventId else doc


def expected_for(case: Case) -> Expected:
    """What the accepted `case` stores; a sized case's pad is only known once rendered."""
    assert case.expected is not None
    if case.size is None:
        return case.expected
    props = dict(case.expected.properties)
    props["pad"] = "x" * (case.size - len(replace(case, size=None).render(0)))
    return replace(case.expected, properties=props)


# --- through the bulk stage and the partition state --------------------------------

E = {name: i for i, name in enumerate(EVENT_COLUMNS)}
R = {name: i for i, name in enumerate(REJECTED_COLUMNS)}
D = {name: i for i, name in enumerate(DUPLICATE_COLUMNS)}


@dataclass
class Run:
    """The cases as Kafka records, and what the bulk stage and partition states made of them."""

    topic: str
    salt: int
    cases: list[Case]
    raws: list[bytes]
    #: (source partition, offset) of each case, in arrival order.
    places: list[tuple[int, int]]
    batches: list[tuple[int, bytes]]
    outcomes: list[Outcome]

    def rows(self, name: str) -> list[Row]:
        return [row for outcome in self.outcomes for row in getattr(outcome.rows, name)]


def run_cases(
    cases: list[Case],
    *,
    salt: int,
    topic: str,
    source_partitions: list[int],
    partitions: int = 2,
    max_batch_bytes: int = MAX_BATCH_BYTES,
) -> Run:
    """Feed the cases to the real bulk-stage batcher, then to fresh partition states.

    The records are built as aiokafka hands them to the bulk stage (unkeyed, so
    each accepted event is routed by its identity); the batches are applied in
    the order the stage would produce them.
    """
    batcher = Batcher(Settings(partitions=partitions), max_batch_bytes=max_batch_bytes)
    offsets: Counter[int] = Counter()
    raws, places = [], []
    for case, sp in zip(cases, source_partitions, strict=True):
        raw = case.render(salt)
        offset = offsets[sp]
        offsets[sp] += 1
        record = ConsumerRecord(
            topic, sp, offset, case.received_ms, 0, None, raw, None, 0, len(raw), []
        )
        batcher.add(topic, record)
        raws.append(raw)
        places.append((sp, offset))
    batches = batcher.drain()
    states = {q: PartitionState(q, lateness_s=3600, session_gap_s=1800) for q in range(partitions)}
    outcomes = [states[q].apply(value, version) for version, (q, value) in enumerate(batches)]
    return Run(topic, salt, cases, raws, places, batches, outcomes)


def assert_accounted(run: Run) -> None:
    """Every case has exactly the one outcome the contract gives it, with exact rows.

    Accepted events are stored once (a second copy of an id is a duplicate), with
    their strings, properties and context as sent; rejected messages keep their
    raw bytes (truncated only past the size limit) and the expected reason.
    """
    events = {(row[E["partition"]], row[E["offset"]]): row for row in run.rows("events")}
    rejected = {(row[R["partition"]], row[R["offset"]]): row for row in run.rows("rejected")}
    duplicates = {(row[D["partition"]], row[D["offset"]]): row for row in run.rows("duplicates")}
    total = len(run.rows("events")) + len(run.rows("rejected")) + len(run.rows("duplicates"))
    assert total == len(run.cases), "a message was lost or stored twice"
    assert set(events) | set(rejected) | set(duplicates) == set(run.places)
    counted = [(o.accepted, o.duplicates, o.rejected, o.skipped) for o in run.outcomes]
    assert [sum(c[i] for c in counted) for i in range(4)] == [
        len(events),
        len(duplicates),
        len(rejected),
        0,
    ]
    assert sum(len(o.dead_letters) for o in run.outcomes) == len(rejected)
    for outcome in run.outcomes:
        orjson.loads(outcome.delta)
        for _, letter in outcome.dead_letters:
            orjson.loads(letter)

    stored: set[str] = set()
    for case, raw, place in zip(run.cases, run.raws, run.places, strict=True):
        where = f"{case.label} at {place}: {raw[:300]!r}"
        if case.reason is not None:
            assert place in rejected, f"not rejected: {where}"
            row = rejected[place]
            if case.reason == ANY_REASON:
                assert row[R["reason"]] in STATELESS_REASONS, where
            else:
                assert row[R["reason"]] == case.reason, f"{row[R['detail']]!r}: {where}"
            assert row[R["raw"]] == raw[:MAX_EVENT_BYTES], where
            assert row[R["truncated"]] == int(len(raw) > MAX_EVENT_BYTES), where
            assert row[R["received_at"]] == case.received_ms
            detail = row[R["detail"]]
            assert type(detail) is str and len(detail) <= 300 and detail.encode(), where
            continue
        event_id = case.event_id(run.salt)
        if event_id in stored:
            assert place in duplicates, f"a second copy was not a duplicate: {where}"
            assert duplicates[place][D["event_id"]] == event_id
            continue
        assert place in events, f"not stored: {where} ({rejected.get(place)})"
        stored.add(event_id)
        row = events[place]
        want = expected_for(case)
        assert row[E["event_id"]] == event_id, where
        assert (row[E["source"]], row[E["type"]]) == (want.source, want.type), where
        assert row[E["identity"]] == want.identity, where
        assert row[E["customer_id"]] == want.customer_id, where
        assert row[E["anonymous_id"]] == want.anonymous_id, where
        if want.session_id is not None:
            assert row[E["session_id"]] == want.session_id, where
        else:  # sessionized: the identity's current session, own or derived
            assert row[E["session_id"]], where
        assert row[E["stage"]] in journey.STAGES, where
        assert orjson.loads(row[E["properties"]]) == want.properties, where
        assert orjson.loads(row[E["context"]]) == want.context, where
        assert (row[E["topic"]], row[E["received_at"]]) == (run.topic, case.received_ms)
