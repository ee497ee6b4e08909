"""The truth the integration tests hold the pipeline to: docs/semantics.md, implemented again.

Nothing here imports the pipeline or its schemas, on purpose: a rule both sides get wrong the
same way would otherwise pass unnoticed. The code follows the document section by section
and favours being obviously right over being fast.

Where the document leaves a case open, the reading taken here is stated in a comment marked
"Reading:"; the corpus of `tests/corpus.py` avoids those cases.
"""

from __future__ import annotations

import json
import math
import re
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from aiokafka.partitioner import murmur2

# Types of each source (shared/design/contract.md).
TYPES: dict[str, frozenset[str]] = {
    "web": frozenset(
        {
            "page_view",
            "click",
            "search",
            "signup",
            "add_to_cart",
            "checkout_started",
            "purchase",
            "web_vital",
            "error",
        }
    ),
    "app": frozenset(
        {
            "app_install",
            "app_open",
            "screen_view",
            "tap",
            "signup",
            "add_to_cart",
            "checkout_started",
            "purchase",
            "crash",
            "error",
        }
    ),
    "support": frozenset(
        {
            "ticket_opened",
            "agent_reply",
            "ticket_resolved",
            "ticket_reopened",
            "chat_started",
            "csat_submitted",
            "nps_submitted",
            "ces_submitted",
        }
    ),
}

STAGES = ("awareness", "consideration", "conversion", "service", "advocacy")
RANK = {stage: rank for rank, stage in enumerate(STAGES, start=1)}

# The stage a type enters (shared/design/metrics.md); `purchase` and `nps_submitted` depend on
# the identity and the score, every other type missing here is an experience signal.
ENTERS: dict[str, str] = {
    "page_view": "awareness",
    "app_install": "awareness",
    "app_open": "awareness",
    "screen_view": "awareness",
    "search": "consideration",
    "click": "consideration",
    "tap": "consideration",
    "add_to_cart": "consideration",
    "checkout_started": "consideration",
    "signup": "conversion",
    "ticket_opened": "service",
    "chat_started": "service",
    "agent_reply": "service",
    "ticket_resolved": "service",
    "ticket_reopened": "service",
}

# Inclusive upper bound of a "good" value per web vital.
VITAL_GOOD: dict[str, float] = {"lcp": 2500, "inp": 200, "cls": 0.1, "fcp": 1800, "ttfb": 800}

STAGE_COLUMNS = ("events", "customers", "entries", "conversions")
EXPERIENCE_COLUMNS = (
    "csat_responses",
    "csat_satisfied",
    "nps_responses",
    "nps_promoters",
    "nps_detractors",
    "ces_responses",
    "ces_sum",
    "errors",
    "crashes",
    "sessions",
    "crash_sessions",
    "first_responses",
    "first_response_ms_sum",
    "resolutions",
    "resolution_ms_sum",
    "reopens",
    *(f"{name}_{kind}" for name in VITAL_GOOD for kind in ("count", "good")),
)

SESSION_GAP_MS = 1_800_000
JOURNEY_TTL_S = 30 * 86_400
_MINUTE_MS = 60_000

WindowKey = tuple[int, str, str]
"""(window_start in epoch seconds, channel, stage)."""


@dataclass
class Expected:
    """Every stored result of one input file, keyed as in docs/relations.md."""

    received: int = 0
    duplicates: int = 0
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejected: Counter[tuple[bytes, str]] = field(default_factory=Counter)
    """Multiset of (raw bytes as stored, reason); offsets depend on the partitioning."""
    stage_minute: dict[WindowKey, dict[str, int]] = field(default_factory=dict)
    stage_hour: dict[WindowKey, dict[str, int]] = field(default_factory=dict)
    stage_day: dict[WindowKey, dict[str, int]] = field(default_factory=dict)
    experience_minute: dict[WindowKey, dict[str, int]] = field(default_factory=dict)
    """Only rows with a non-zero column; the others carry no information."""
    experience_hour: dict[WindowKey, dict[str, int]] = field(default_factory=dict)
    experience_day: dict[WindowKey, dict[str, int]] = field(default_factory=dict)
    stage_entries: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    identity_links: dict[str, str] = field(default_factory=dict)
    linked_at: dict[str, int] = field(default_factory=dict)
    """anonymous_id -> event time (epoch ms) of its first link."""

    @property
    def stored(self) -> int:
        return len(self.events)

    @property
    def rejected_count(self) -> int:
        return sum(self.rejected.values())

    def reasons(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for (_, reason), n in self.rejected.items():
            out[reason] += n
        return out


@dataclass(frozen=True)
class Event:
    """A message that passed the stateless checks of section 1."""

    event_id: str
    source: str
    type: str
    time_ms: int
    received_ms: int
    customer_id: str | None
    anonymous_id: str | None
    session_id: str | None
    properties: dict[str, Any]
    context: dict[str, str]

    @property
    def identity(self) -> str:
        identity = self.customer_id or self.anonymous_id
        assert identity is not None
        return identity


class Rejected(Exception):
    """A message the pipeline must store in `xp.rejected_events` under `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Section 1: stateless checks.

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
# Reading: a UUID is spelled hyphenated (8-4-4-4-12) or as 32 hex digits, in either case.
_UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}", re.I
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# ClickHouse's DateTime ends here: an event time from this instant on is `invalid_field`.
_DATETIME_END_MS = (datetime(2106, 2, 7, 6, 28, 16, tzinfo=UTC) - _EPOCH) // timedelta(
    milliseconds=1
)
MAX_JSON_DEPTH = 1024
"""Deeper JSON is `invalid_json`; the message itself is level 1."""
MAX_PROPERTIES_DEPTH = 64
"""Objects and arrays nested deeper in `properties` (itself level 1) are `invalid_field`."""
# A string literal (escapes included) or a bracket: brackets outside strings are the nesting.
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def epoch_ms(value: object) -> int | None:
    """Epoch milliseconds of an RFC 3339 timestamp with an offset, fraction truncated.

    Reading: RFC 3339 means a `T` separator, seconds, and `Z` or `+hh:mm`; naive times,
    dates alone and numbers are not timestamps."""
    if not isinstance(value, str):
        return None
    m = _RFC3339.fullmatch(value)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction, sign, off_h, off_m = m.groups()[6:]
    offset = timedelta(0)
    if sign is not None:
        if int(off_m) > 59:
            return None
        offset = timedelta(hours=int(off_h), minutes=int(off_m)) * (1 if sign == "+" else -1)
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
    except ValueError:
        return None
    seconds = (moment - _EPOCH) // timedelta(seconds=1)
    return seconds * 1000 + int((fraction or "")[:3].ljust(3, "0"))


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional(props: dict[str, Any], key: str, check: Callable[[Any], bool]) -> bool:
    """Reading: an optional property may be absent or null."""
    return props.get(key) is None or check(props[key])


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _properties_ok(type_: str, props: dict[str, Any]) -> bool:
    """Per-type property rules of contract.md.

    Reading: a required property that is absent is `invalid_field` (the `missing_field` list
    of semantics.md names envelope fields only); properties without a stated type or range
    (`value` of `add_to_cart`, `currency`) accept any value of the natural type."""

    def required(key: str, check: Callable[[Any], bool]) -> bool:
        return props.get(key) is not None and check(props[key])

    def score(low: int, high: int) -> bool:
        return required("score", lambda v: _is_int(v) and low <= v <= high)

    match type_:
        case "page_view":
            return required("path", _is_str) and _optional(props, "referrer", _is_str)
        case "click":
            return _optional(props, "target", _is_str)
        case "search":
            return _optional(props, "query", _is_str)
        case "add_to_cart":
            return _optional(props, "sku", _is_str) and _optional(props, "value", _is_number)
        case "purchase":
            return (
                required("order_id", _is_str)
                and required("revenue", lambda v: _is_number(v) and v >= 0)
                and required("currency", _is_str)
            )
        case "web_vital":
            return required("name", lambda v: v in ("LCP", "INP", "CLS", "FCP", "TTFB")) and (
                required("value", lambda v: _is_number(v) and v >= 0)
            )
        case "error":
            return _optional(props, "message", _is_str) and _optional(props, "fatal", _is_bool)
        case "screen_view":
            return required("screen", _is_str)
        case "crash":
            return _optional(props, "message", _is_str)
        case "ticket_opened" | "ticket_resolved" | "ticket_reopened":
            return required("ticket_id", _is_str)
        case "agent_reply":
            return required("ticket_id", _is_str) and _optional(props, "is_bot", _is_bool)
        case "csat_submitted":
            return score(1, 5)
        case "nps_submitted":
            return score(0, 10)
        case "ces_submitted":
            return score(1, 7)
    return True


def _id_ok(value: object) -> bool:
    return value is None or (isinstance(value, str) and 1 <= len(value) <= 128)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is beyond a double's range")
    return value


def _int_within_double(text: str) -> int:
    value = int(text)  # a ValueError beyond 4,300 digits, far beyond a double anyway
    try:
        float(value)
    except OverflowError:
        raise ValueError(f"{text[:20]}... is beyond a double's range") from None
    return value


def _json_depth(text: str) -> int:
    """How deep the brackets outside string literals nest: the depth of `text` if it is JSON.

    Counted without parsing so that no input reaches the standard library's recursive
    parser deeper than MAX_JSON_DEPTH; for text that is not JSON the count may be anything,
    which does not matter as the parser rejects that text anyway."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0
    depth = deepest = 0
    for token in _STRING_OR_BRACKET.finditer(text):
        bracket = token.group()
        if bracket in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif bracket in ("]", "}"):
            depth -= 1
    return deepest


def _containers(value: Any) -> Iterator[tuple[Any, int]]:
    """Every object and array in `value` with its level (`value` is level 1), iteratively."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        yield item, level
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, level + 1) for c in children if isinstance(c, dict | list))


def _parse(raw: bytes) -> Any:
    """RFC 8259 JSON at most MAX_JSON_DEPTH deep, as section 1 defines it; ValueError if not.

    Reading: a lone surrogate may hide in an escape only (UTF-8 cannot encode one), so a
    surrogate code point in the parsed document is a lone escaped one; an escaped pair is
    one character."""
    text = raw.decode("utf-8")
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    limit = sys.getrecursionlimit()
    # The C parser counts each level against the recursion limit (1,000 by default).
    sys.setrecursionlimit(limit + MAX_JSON_DEPTH + 100)
    try:
        body = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            parse_int=_int_within_double,
        )
    finally:
        sys.setrecursionlimit(limit)
    if "\\u" not in text:  # a surrogate can only come from an escape
        return body
    if isinstance(body, dict | list):
        for item, _ in _containers(body):
            strings = (*item.keys(), *item.values()) if isinstance(item, dict) else item
            if any(isinstance(s, str) and _SURROGATE.search(s) for s in strings):
                raise ValueError("lone surrogate")
    elif isinstance(body, str) and _SURROGATE.search(body):
        raise ValueError("lone surrogate")
    return body


def _properties_depth_ok(props: dict[str, Any]) -> bool:
    return all(level <= MAX_PROPERTIES_DEPTH for _, level in _containers(props))


def check(raw: bytes, *, max_clock_skew_s: int = 300, max_event_bytes: int = 65536) -> Event:
    """The stateless checks of a message, in the order of the table; raises `Rejected`."""
    if len(raw) > max_event_bytes:
        raise Rejected("too_large")
    try:
        body = _parse(raw)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise Rejected("invalid_json") from None
    if not isinstance(body, dict):
        raise Rejected("not_an_object")
    version = body.get("schema_version")
    if _is_int(version) and version != 1:
        raise Rejected("unknown_schema_version")
    if any(body.get(key) is None for key in ("event_id", "source", "type", "occurred_at")):
        raise Rejected("missing_field")
    # Reading: a null id is an absent id.
    if body.get("customer_id") is None and body.get("anonymous_id") is None:
        raise Rejected("missing_field")
    source, type_ = body["source"], body["type"]
    if (
        isinstance(source, str)
        and source in TYPES
        and not (isinstance(type_, str) and type_ in TYPES[source])
    ):
        raise Rejected("unknown_type")

    event_id = body["event_id"]
    occurred = epoch_ms(body["occurred_at"])
    sent = epoch_ms(body.get("sent_at"))
    props = {} if body.get("properties") is None else body["properties"]
    context = {} if body.get("context") is None else body["context"]
    session = body.get("session_id")
    valid = (
        # Reading: schema_version null is the default; a non-integer is the wrong type.
        (version is None or _is_int(version))
        and isinstance(event_id, str)
        and _UUID.fullmatch(event_id) is not None
        and isinstance(source, str)
        and source in TYPES
        and occurred is not None
        and (body.get("sent_at") is None or sent is not None)
        and _id_ok(body.get("customer_id"))
        and _id_ok(body.get("anonymous_id"))
        and (session is None or isinstance(session, str))
        and isinstance(props, dict)
        and _properties_ok(type_, props)
        and _properties_depth_ok(props)
        and isinstance(context, dict)
        and all(isinstance(v, str) for v in context.values())
    )
    if not valid:
        raise Rejected("invalid_field")
    assert occurred is not None
    received = epoch_ms(body.get("received_at"))
    if received is None:
        raise ValueError(f"a line that reaches the clock checks needs a received_at: {raw[:200]!r}")
    time_ms = occurred if sent is None else occurred + (received - sent)
    if time_ms < 0:
        raise Rejected("invalid_field")
    if time_ms - received > max_clock_skew_s * 1000:
        raise Rejected("future_timestamp")
    if time_ms >= _DATETIME_END_MS:
        raise Rejected("invalid_field")
    return Event(
        event_id=str(uuid.UUID(event_id)),
        source=source,
        type=type_,
        time_ms=time_ms,
        received_ms=received,
        customer_id=body.get("customer_id"),
        anonymous_id=body.get("anonymous_id"),
        session_id=session,
        properties=props,
        context=context,
    )


# Sections 3 to 6: per partition, per identity, per window.


@dataclass
class _Partition:
    watermark: int | None = None
    remembered: dict[str, int] = field(default_factory=dict)
    """Accepted event id -> the watermark at which its window closes."""


@dataclass
class _Identity:
    entered: dict[str, int] = field(default_factory=dict)
    """Stage -> time of its entry (ms)."""
    highest: int = 0
    current: str = "none"
    purchases: int = 0
    derived_session: str | None = None
    latest_ms: int | None = None
    previous_session: str | None = None
    crashed_sessions: set[str] = field(default_factory=set)
    opened: dict[str, int] = field(default_factory=dict)
    """Ticket id -> time of its accepted `ticket_opened` (ms)."""
    responded: set[str] = field(default_factory=set)


@dataclass
class _Window:
    events: int = 0
    customers: set[str] = field(default_factory=set)
    entries: int = 0
    conversions: int = 0
    experience: Counter[str] = field(default_factory=Counter)


class _Oracle:
    def __init__(self, partitions: int, allowed_lateness_s: int, journey_ttl_s: int) -> None:
        self.partitions = [_Partition() for _ in range(partitions)]
        self.lateness_ms = allowed_lateness_s * 1000
        self.ttl_ms = journey_ttl_s * 1000
        self.identities: defaultdict[str, _Identity] = defaultdict(_Identity)
        self.windows: defaultdict[tuple[int, str, str], _Window] = defaultdict(_Window)
        self.out = Expected()

    def offer(self, event: Event) -> None:
        """Section 3: duplicate, too late, or accepted."""
        # Kafka's default partitioner on the identity key (murmur2), as docs/semantics.md §2.
        bucket = (murmur2(event.identity.encode()) & 0x7FFFFFFF) % len(self.partitions)
        part = self.partitions[bucket]
        closes_at = event.time_ms // _MINUTE_MS * _MINUTE_MS + _MINUTE_MS + self.lateness_ms
        seen = part.remembered.get(event.event_id)
        if seen is not None and (part.watermark is None or part.watermark < seen):
            self.out.duplicates += 1
            return
        if part.watermark is not None and part.watermark >= closes_at:
            raise Rejected("too_late")
        part.remembered[event.event_id] = closes_at
        part.watermark = max(part.watermark or event.time_ms, event.time_ms)
        self.accept(event, part.watermark - self.ttl_ms)

    def accept(self, event: Event, cutoff: int) -> None:
        """Sections 4 to 6 for one accepted event; `cutoff` is the watermark minus the TTL.

        Expiry (section 4): an identity whose latest event time is before the cutoff starts
        over, as if never seen, and its entries replace the old ones in `stage_entries`.
        Expired links need nothing here: a link recorded again is later than the first one, and
        `identity_links` keeps the first."""
        who = self.identities[event.identity]
        if who.latest_ms is not None and who.latest_ms < cutoff:
            who = self.identities[event.identity] = _Identity()
        t = event.time_ms
        entered = self._enters(event, who)
        stage = entered or who.current
        window = self.windows[(t // _MINUTE_MS * 60, event.source, stage)]
        window.events += 1
        window.customers.add(event.identity)
        if entered is not None:
            self._enter(event, who, entered, window)
        session = self._session(event, who, window.experience)
        if event.type in ("ticket_opened", "agent_reply", "ticket_resolved"):
            ticket = event.properties["ticket_id"]
            if ticket in who.opened and who.opened[ticket] < cutoff:
                # A ticket opened before the cutoff is forgotten, its first response with it.
                del who.opened[ticket]
                who.responded.discard(ticket)
        self._experience(event, who, session, window.experience)
        if event.customer_id is not None and event.anonymous_id is not None:
            self.out.identity_links.setdefault(event.anonymous_id, event.customer_id)
            self.out.linked_at.setdefault(event.anonymous_id, t)
        self.out.events[event.event_id] = {
            "source": event.source,
            "type": event.type,
            "occurred_at": t,
            "received_at": event.received_ms,
            "identity": event.identity,
            "customer_id": event.customer_id,
            "anonymous_id": event.anonymous_id,
            "session_id": session,
            "stage": stage,
            "properties": event.properties,
            "context": event.context,
        }

    @staticmethod
    def _enters(event: Event, who: _Identity) -> str | None:
        """The stage an event enters, None for an experience signal."""
        if event.type == "purchase":
            who.purchases += 1
            return "conversion" if who.purchases == 1 else "advocacy"
        if event.type == "nps_submitted" and event.properties["score"] >= 9:
            return "advocacy"
        return ENTERS.get(event.type)

    def _enter(self, event: Event, who: _Identity, stage: str, window: _Window) -> None:
        t, rank = event.time_ms, RANK[stage]
        if stage not in who.entered:
            converted = rank >= 2 and who.highest == rank - 1
            window.entries += 1
            window.conversions += converted
            awareness = who.entered.get("awareness")
            # Reading: the awareness entry itself has no time to convert (null).
            seconds = None
            if stage != "awareness" and awareness is not None:
                seconds = max(0.0, (t - awareness) / 1000)
            self.out.stage_entries[(event.identity, stage)] = {
                "channel": event.source,
                "entered_at": t,
                "converted": int(converted),
                "seconds_to_convert": seconds,
            }
            who.entered[stage] = t
        who.highest = max(who.highest, rank)
        who.current = stage

    @staticmethod
    def _session(event: Event, who: _Identity, counts: Counter[str]) -> str:
        """Section 5: the event's session id, counting a start when it changes.

        Reading: "no session yet" means no derived session yet, and the identity's latest event
        time is the maximum over all its accepted events, with or without a session id."""
        t, session = event.time_ms, event.session_id
        if session is None:
            if (
                who.derived_session is None
                or who.latest_ms is None
                or t - who.latest_ms > SESSION_GAP_MS
            ):
                who.derived_session = f"{event.identity}#{t}"
            session = who.derived_session
        who.latest_ms = t if who.latest_ms is None else max(who.latest_ms, t)
        if session != who.previous_session:
            counts["sessions"] += 1
        who.previous_session = session
        return session

    @staticmethod
    def _experience(event: Event, who: _Identity, session: str, counts: Counter[str]) -> None:
        props, t = event.properties, event.time_ms
        match event.type:
            case "csat_submitted":
                counts["csat_responses"] += 1
                counts["csat_satisfied"] += props["score"] >= 4
            case "nps_submitted":
                counts["nps_responses"] += 1
                counts["nps_promoters"] += props["score"] >= 9
                counts["nps_detractors"] += props["score"] <= 6
            case "ces_submitted":
                counts["ces_responses"] += 1
                counts["ces_sum"] += props["score"]
            case "error":
                counts["errors"] += 1
            case "crash":
                counts["crashes"] += 1
                if session not in who.crashed_sessions:
                    who.crashed_sessions.add(session)
                    counts["crash_sessions"] += 1
            case "ticket_opened":
                # Reading: a second `ticket_opened` of a ticket keeps the first time.
                who.opened.setdefault(props["ticket_id"], t)
            case "agent_reply":
                ticket = props["ticket_id"]
                human = props.get("is_bot") is not True
                if human and ticket in who.opened and ticket not in who.responded:
                    who.responded.add(ticket)
                    counts["first_responses"] += 1
                    counts["first_response_ms_sum"] += t - who.opened[ticket]
            case "ticket_resolved":
                if props["ticket_id"] in who.opened:
                    counts["resolutions"] += 1
                    counts["resolution_ms_sum"] += t - who.opened[props["ticket_id"]]
            case "ticket_reopened":
                counts["reopens"] += 1
            case "web_vital":
                name = props["name"].lower()
                counts[f"{name}_count"] += 1
                counts[f"{name}_good"] += props["value"] <= VITAL_GOOD[name]

    def finish(self) -> Expected:
        out = self.out
        for seconds, target_stage, target_exp in (
            (60, out.stage_minute, out.experience_minute),
            (3600, out.stage_hour, out.experience_hour),
            (86400, out.stage_day, out.experience_day),
        ):
            rolled: defaultdict[tuple[int, str, str], _Window] = defaultdict(_Window)
            for (start, channel, stage), w in self.windows.items():
                r = rolled[(start // seconds * seconds, channel, stage)]
                r.events += w.events
                r.customers |= w.customers
                r.entries += w.entries
                r.conversions += w.conversions
                r.experience.update(w.experience)
            for key, r in rolled.items():
                target_stage[key] = {
                    "events": r.events,
                    "customers": len(r.customers),
                    "entries": r.entries,
                    "conversions": r.conversions,
                }
                if any(r.experience.values()):
                    target_exp[key] = {c: r.experience[c] for c in EXPERIENCE_COLUMNS}
        return out


def lines(path: Path) -> Iterator[bytes]:
    """The messages of a JSONL file: one per line, without its newline."""
    data = path.read_bytes()
    chunks = data.split(b"\n")
    if chunks and chunks[-1] == b"":
        chunks.pop()
    yield from chunks


def expected(
    path: Path,
    *,
    partitions: int = 4,
    allowed_lateness_s: int = 3600,
    max_clock_skew_s: int = 300,
    max_event_bytes: int = 65536,
    journey_ttl_s: int = JOURNEY_TTL_S,
) -> Expected:
    """What the pipeline must store after processing the JSONL file at `path`."""
    oracle = _Oracle(partitions, allowed_lateness_s, journey_ttl_s)
    for raw in lines(path):
        oracle.out.received += 1
        try:
            event = check(raw, max_clock_skew_s=max_clock_skew_s, max_event_bytes=max_event_bytes)
            oracle.offer(event)
        except Rejected as rejected:
            oracle.out.rejected[(raw[:max_event_bytes], rejected.reason)] += 1
    return oracle.finish()
