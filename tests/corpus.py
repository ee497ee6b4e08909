"""A seeded JSONL corpus of touchpoint events, built to be checked against `tests/oracle.py`.

The corpus reads like real traffic (journeys of a few thousand people over web, app and
support) and injects every kind of trouble docs/semantics.md handles: duplicates, invalid
lines of every stateless reason, out-of-order and hours-late arrivals, client clock skew.
It deliberately stays away from inputs whose outcome the rules leave open or make fragile, so
that a disagreement between the pipeline and the oracle is a bug, not a reading:

- duplicates are re-sends of accepted events within minutes, never near the lateness horizon;
- late events are hours late and only after 35 minutes of stream time, on-time events are at
  most minutes out of order, so no event is within seconds of a window closing;
- a person either always sends session ids or never does, and session gaps are under 5
  minutes or over 40, never close to the 30-minute sessionization gap;
- ticket events, purchases, signups and events carrying both ids arrive in order, so "first
  reply", "first purchase" and "first link" mean the same in processing and event order;
- an anonymous id is linked to one customer only;
- `sent_at` and `received_at` are whole milliseconds, so correcting before or after
  truncating `occurred_at` to milliseconds gives the same time;
- web vital values never equal a "good" threshold.

A person's sessions are 40 to 75 minutes apart, so a journey TTL just over an hour (as in
tests/unit/test_pure_pipeline.py) makes some journeys start over and some tickets expire
under active customers. Expiry needs no such care: it follows the partition's watermark in
processing order, which the pipeline and the oracle see alike.
"""

from __future__ import annotations

import heapq
import json
import random
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

_US = 1_000_000
_MIN = 60 * _US

# Average events a person's journey produces before the stream ends; sets how fast new people
# arrive so that the corpus spans about `duration` of event time.
_EVENTS_PER_PERSON = 8.5

_COUNTRIES = ["US", "US", "US", "GB", "DE", "FR", "BR", "IN", "JP", "CA"]
_LOCALES = {
    "US": "en-US",
    "GB": "en-GB",
    "DE": "de-DE",
    "FR": "fr-FR",
    "BR": "pt-BR",
    "IN": "en-IN",
    "JP": "ja-JP",
    "CA": "en-CA",
}
# Minutes east of UTC a client writes its timestamps in.
_TZ = {"US": -300, "GB": 0, "DE": 60, "FR": 60, "BR": -180, "IN": 330, "JP": 540, "CA": -240}
_BROWSERS = ["chrome", "chrome", "safari", "firefox", "edge"]
_APP_VERSIONS = ["5.1.3", "5.2.0", "5.2.0", "5.2.1"]
_DEVICES = ["iPhone15,2", "iPhone14,5", "Pixel 8", "SM-S918B", "iPad13,4"]
_PATHS = ["/", "/", "/pricing", "/blog/summer-sale", "/p/1042", "/p/2210", "/c/shoes", "/help"]
_SCREENS = ["home", "catalog", "product", "cart", "profile", "orders"]
_QUERIES = ["running shoes", "crème brûlée set", "東京 travel bag", "gift card", "rain jacket"]
_REFERRERS = ["https://news.example.org/", "https://social.example.com/p/1", "android-app://x"]
_SKUS = ["SKU-1042", "SKU-2210", "SKU-3301", "SKU-0007"]
_CURRENCIES = ["USD", "USD", "EUR", "GBP", "BRL", "JPY"]
_ERRORS = ["TypeError: x is undefined", "NetworkError", "ChunkLoadError", "500 from /api/cart"]

# Upper bounds of a "good" web vital; values equal to one are nudged away.
_VITAL_GOOD = {"LCP": 2500.0, "INP": 200.0, "CLS": 0.1, "FCP": 1800.0, "TTFB": 800.0}
# Median and spread (multiplicative) of generated web vital values.
_VITAL_DIST = {
    "LCP": (2100.0, 1.6),
    "INP": (150.0, 1.8),
    "CLS": (0.06, 2.2),
    "FCP": (1500.0, 1.5),
    "TTFB": (550.0, 1.7),
}

# Types that may be delivered minutes late; the rest keep their order (see module docstring).
_MAY_ARRIVE_LATE = frozenset(
    {"page_view", "click", "search", "screen_view", "tap", "web_vital", "error", "crash"}
)


@dataclass(frozen=True)
class CorpusInfo:
    """What `make_corpus` put into the file, for reporting and for checking the oracle."""

    path: Path
    lines: int
    seed: int
    first_received: datetime
    last_received: datetime
    valid: int
    duplicates: int
    too_late: int
    invalid: Mapping[str, int]
    invalid_variants: Mapping[str, int]
    out_of_order: int
    with_sent_at: int
    clock_skewed: int
    uppercase_ids: int
    identities: int
    linked_anonymous_ids: int
    types: Mapping[str, int]

    @property
    def rejected(self) -> dict[str, int]:
        """Rejected lines per reason, the stateful `too_late` included."""
        out = dict(self.invalid)
        if self.too_late:
            out["too_late"] = self.too_late
        return out


@dataclass
class _Planned:
    """One valid event of a journey, before it becomes a line."""

    true_us: int
    arrival_us: int
    source: str
    type: str
    properties: dict[str, Any] | None
    customer_id: str | None
    anonymous_id: str | None
    session_id: str | None
    context: dict[str, str] | None
    clock_offset_ms: int | None
    tz_minutes: int
    digits: int
    late: bool


@dataclass
class _Person:
    web_anon: str
    device: str
    customer: str | None
    country: str
    sessioned: bool
    web_sent_at: bool
    web_offset_ms: int
    app_offset_ms: int
    app_digits: int
    platform: str
    device_model: str
    browser: str
    app_version: str


@dataclass
class _Counters:
    tickets: int = 0
    orders: int = 0
    customers: int = 0


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _timestamp(us: int, *, tz_minutes: int = 0, digits: int = 3) -> str:
    """RFC 3339 with `digits` fraction digits (truncated) in a client's UTC offset."""
    local = datetime(1970, 1, 1) + timedelta(microseconds=us + tz_minutes * _MIN)
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{local.microsecond:06d}"[:digits]
    if tz_minutes == 0:
        return text + "Z"
    sign = "+" if tz_minutes > 0 else "-"
    hours, minutes = divmod(abs(tz_minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


def _received(us: int) -> str:
    return _timestamp(us - us % 1000, digits=3)


def _vital(rng: random.Random, name: str) -> float | int:
    median, spread = _VITAL_DIST[name]
    value = median * spread ** rng.gauss(0.0, 1.0)
    out: float | int = round(value, 3) if name == "CLS" else int(value)
    if out == _VITAL_GOOD[name]:
        out = out + (0.001 if name == "CLS" else 1)
    return out


def _nps_score(rng: random.Random) -> int:
    return rng.choices(range(11), weights=[2, 1, 1, 2, 2, 4, 5, 8, 12, 18, 20])[0]


class _Journey:
    """Builds one person's events with a moving clock, one session at a time."""

    def __init__(
        self, rng: random.Random, person: _Person, counters: _Counters, start_us: int
    ) -> None:
        self.rng = rng
        self.person = person
        self.counters = counters
        self.t = start_us
        self.events: list[_Planned] = []
        self.session: str | None = None
        self.new_session(first=True)

    def step(self, lo_s: float, hi_s: float) -> None:
        # At least 3 s between a person's events: more than any ordinary network delay, so
        # only the deliberately late events change the order of an identity's events.
        self.t += int(self.rng.uniform(max(lo_s, 3.0), max(hi_s, 3.0)) * _US)

    def new_session(self, *, first: bool = False) -> None:
        if not first:
            self.t += int(self.rng.uniform(40, 75) * _MIN)
        self.session = f"s-{self.rng.getrandbits(64):016x}" if self.person.sessioned else None

    def login(self) -> None:
        if self.person.customer is None:
            self.counters.customers += 1
            self.person.customer = f"cus_{self.counters.customers:06d}"

    def emit(self, source: str, type_: str, props: dict[str, Any] | None, who: str) -> None:
        """Adds an event; `who` says which ids it carries: web/app (anonymous), web+/app+
        (anonymous and customer: a link), customer."""
        p, rng = self.person, self.rng
        anonymous = {"web": p.web_anon, "web+": p.web_anon, "app": p.device, "app+": p.device}
        customer = p.customer if who in ("web+", "app+", "customer") else None
        offset: int | None = None
        digits, tz = 3, _TZ[p.country]
        if source == "web":
            offset = p.web_offset_ms if p.web_sent_at else None
            context: dict[str, str] | None = {
                "platform": "web",
                "browser": p.browser,
                "country": p.country,
                "locale": _LOCALES[p.country],
            }
        elif source == "app":
            offset, digits = p.app_offset_ms, p.app_digits
            context = {
                "platform": p.platform,
                "app_version": p.app_version,
                "device": p.device_model,
                "country": p.country,
            }
        else:
            digits, tz = rng.choice([0, 3]), 0
            context = {"country": p.country, "channel": rng.choice(["chat", "email", "phone"])}
        if rng.random() < 0.05:
            context = None
        delay = int(rng.uniform(0.02, 2.0) * _US) if source != "support" else int(0.3 * _US)
        late = (
            type_ in _MAY_ARRIVE_LATE
            and who in ("web", "app", "customer")
            and rng.random() < (0.05 if source == "app" else 0.02)
        )
        if late:
            delay = int(rng.uniform(2.0, 8.0) * _MIN)
        self.events.append(
            _Planned(
                true_us=self.t,
                arrival_us=self.t + delay,
                source=source,
                type=type_,
                properties=props,
                customer_id=customer,
                anonymous_id=anonymous.get(who),
                session_id=self.session,
                context=context,
                clock_offset_ms=offset,
                tz_minutes=tz,
                digits=digits,
                late=late,
            )
        )

    # Building blocks of the personas.

    def page(self, who: str) -> None:
        rng = self.rng
        props: dict[str, Any] = {"path": rng.choice(_PATHS)}
        if rng.random() < 0.3:
            props["referrer"] = rng.choice(_REFERRERS)
        if rng.random() < 0.1:
            props["utm_campaign"] = "summer"
        self.emit("web", "page_view", props, who)
        if rng.random() < 0.35:
            for name in rng.sample(list(_VITAL_GOOD), rng.randint(1, 3)):
                self.step(3, 8)
                self.emit("web", "web_vital", {"name": name, "value": _vital(rng, name)}, who)
        if rng.random() < 0.05:
            self.step(3, 20)
            props = {"message": rng.choice(_ERRORS)}
            if rng.random() < 0.5:
                props["fatal"] = rng.random() < 0.2
            self.emit("web", "error", props, who)
        self.step(5, 90)

    def browse(self, who: str, pages: int) -> None:
        rng = self.rng
        for _ in range(pages):
            self.page(who)
            if rng.random() < 0.3:
                self.emit("web", "click", {"target": rng.choice(["cta", "nav", "card"])}, who)
                self.step(3, 40)
            if rng.random() < 0.15:
                self.emit("web", "search", {"query": rng.choice(_QUERIES)}, who)
                self.step(3, 40)

    def buy(self, source: str, who: str) -> None:
        rng = self.rng
        sku = rng.choice(_SKUS)
        self.emit(source, "add_to_cart", {"sku": sku, "value": round(rng.uniform(5, 300), 2)}, who)
        self.step(10, 120)
        self.emit(source, "checkout_started", None, who)
        self.step(20, 180)
        self.counters.orders += 1
        props = {
            "order_id": f"o-{self.counters.orders:07d}",
            "revenue": round(rng.uniform(5, 500), 2),
            "currency": rng.choice(_CURRENCIES),
        }
        if rng.random() < 0.1:
            props["coupon"] = "WELCOME10"
        self.emit(source, "purchase", props, who)
        self.step(5, 60)

    def app_session(self, who: str, screens: int) -> None:
        rng = self.rng
        self.emit("app", "app_open", None, who)
        self.step(3, 15)
        for _ in range(screens):
            self.emit("app", "screen_view", {"screen": rng.choice(_SCREENS)}, who)
            self.step(3, 60)
            if rng.random() < 0.3:
                self.emit("app", "tap", {"element": "button"} if rng.random() < 0.5 else None, who)
                self.step(3, 30)
            if rng.random() < 0.02:
                self.emit("app", "error", {"message": rng.choice(_ERRORS), "fatal": False}, who)
                self.step(3, 30)
        if rng.random() < 0.07:
            props = {"message": "SIGSEGV in ImageDecoder"} if rng.random() < 0.7 else None
            self.emit("app", "crash", props, who)
            self.step(3, 30)

    def survey(self) -> None:
        rng = self.rng
        if rng.random() < 0.6:
            self.emit("support", "csat_submitted", {"score": rng.randint(1, 5)}, "customer")
            self.step(5, 60)
        if rng.random() < 0.4:
            self.emit("support", "ces_submitted", {"score": rng.randint(1, 7)}, "customer")
            self.step(5, 60)
        if rng.random() < 0.4:
            self.emit("support", "nps_submitted", {"score": _nps_score(rng)}, "customer")
            self.step(5, 60)

    def ticket(self) -> None:
        rng = self.rng
        self.counters.tickets += 1
        tid = f"T-{self.counters.tickets:06d}"
        if rng.random() < 0.3:
            self.emit("support", "chat_started", None, "customer")
            self.step(3, 20)
        self.emit("support", "ticket_opened", {"ticket_id": tid, "subject": "order"}, "customer")
        if rng.random() < 0.6:
            self.step(3, 10)
            self.emit("support", "agent_reply", {"ticket_id": tid, "is_bot": True}, "customer")
        if rng.random() < 0.9:
            self.step(60, 600)
            props: dict[str, Any] = {"ticket_id": tid}
            if rng.random() < 0.5:
                props["is_bot"] = False
            self.emit("support", "agent_reply", props, "customer")
            for _ in range(rng.randint(0, 2)):
                self.step(30, 300)
                props = {"ticket_id": tid, "is_bot": rng.random() < 0.3}
                self.emit("support", "agent_reply", props, "customer")
        if rng.random() < 0.8:
            self.step(120, 900)
            self.emit("support", "ticket_resolved", {"ticket_id": tid}, "customer")
            self.step(10, 120)
            self.survey()
            if rng.random() < 0.2:
                self.new_session()
                self.emit("support", "ticket_reopened", {"ticket_id": tid}, "customer")
                self.step(60, 600)
                self.emit("support", "agent_reply", {"ticket_id": tid}, "customer")
                self.step(60, 600)
                self.emit("support", "ticket_resolved", {"ticket_id": tid}, "customer")


def _bounce(j: _Journey) -> None:
    if j.rng.random() < 0.08:
        # A vital or an error reported before the page view: a signal with no stage yet.
        j.emit("web", "web_vital", {"name": "TTFB", "value": _vital(j.rng, "TTFB")}, "web")
        j.step(3, 6)
    j.browse("web", j.rng.randint(1, 3))
    if j.rng.random() < 0.2:
        j.new_session()
        j.browse("web", j.rng.randint(1, 2))


def _shopper(j: _Journey) -> None:
    rng = j.rng
    j.browse("web", rng.randint(2, 4))
    j.emit("web", "search", {"query": rng.choice(_QUERIES)}, "web")
    j.step(5, 60)
    j.browse("web", 1)
    if rng.random() < 0.35:
        j.buy("web", "web")  # a guest checkout: purchases of an anonymous identity
        if rng.random() < 0.3:
            j.new_session()
            j.browse("web", 1)
            j.buy("web", "web")
    else:
        j.emit("web", "add_to_cart", {"sku": rng.choice(_SKUS)}, "web")
        j.step(5, 60)


def _signup(j: _Journey) -> None:
    rng = j.rng
    j.browse("web", rng.randint(1, 3))
    j.login()
    j.emit("web", "signup", {"method": rng.choice(["email", "google"])}, "web+")
    j.step(5, 60)
    j.page("web+")
    if rng.random() < 0.7:
        j.buy("web", "web+" if rng.random() < 0.5 else "customer")
    if rng.random() < 0.5:
        j.new_session()
        j.browse("customer", rng.randint(1, 3))
        if rng.random() < 0.4:
            j.buy("web", "customer")
    if rng.random() < 0.3:
        j.new_session()
        j.ticket()
    elif rng.random() < 0.3:
        j.survey()


def _returning(j: _Journey) -> None:
    rng = j.rng
    j.login()
    j.browse("customer", rng.randint(1, 4))
    if rng.random() < 0.6:
        j.buy("web", "customer")
    if rng.random() < 0.4:
        j.new_session()
        j.browse("customer", 1)
        j.buy("web", "customer")
    if rng.random() < 0.3:
        j.survey()


def _app_user(j: _Journey) -> None:
    rng = j.rng
    if rng.random() < 0.03:
        j.emit("app", "crash", None, "app")  # crashed on first launch, before app_open
        j.step(5, 20)
    if rng.random() < 0.6:
        j.emit("app", "app_install", {"store": rng.choice(["app_store", "play"])}, "app")
        j.step(5, 30)
    j.app_session("app", rng.randint(1, 4))
    if rng.random() < 0.6:
        j.login()
        j.emit("app", "signup", None, "app+")
        j.step(5, 40)
        j.app_session("app+", rng.randint(1, 3))
        if rng.random() < 0.5:
            j.buy("app", "app+")
        if rng.random() < 0.5:
            j.new_session()
            j.app_session("customer", rng.randint(1, 4))
            if rng.random() < 0.3:
                j.buy("app", "customer")
        if rng.random() < 0.15:
            j.new_session()
            j.ticket()
    elif rng.random() < 0.4:
        j.new_session()
        j.app_session("app", rng.randint(1, 3))


def _support(j: _Journey) -> None:
    j.login()
    j.ticket()
    if j.rng.random() < 0.3:
        j.new_session()
        j.browse("customer", 1)


_PERSONAS: list[tuple[Callable[[_Journey], None], float]] = [
    (_bounce, 0.27),
    (_shopper, 0.18),
    (_signup, 0.15),
    (_returning, 0.14),
    (_app_user, 0.17),
    (_support, 0.09),
]


def _person(rng: random.Random) -> _Person:
    country = rng.choice(_COUNTRIES)
    device = f"dev-{rng.getrandbits(64):016X}"
    if rng.random() < 0.01:
        device = (device + "-" + "x" * 128)[:128]  # the longest id the contract allows
    skewed = rng.random() < 0.25
    app_offset = rng.choice([-1, 1]) * rng.randint(10_000, 3 * 3_600_000) if skewed else 0
    web_offset = rng.randint(-120_000, 120_000)
    return _Person(
        web_anon=f"anon-{rng.getrandbits(48):012x}",
        device=device,
        customer=None,
        country=country,
        sessioned=rng.random() < 0.3,
        web_sent_at=rng.random() < 0.3,
        web_offset_ms=web_offset,
        app_offset_ms=app_offset,
        app_digits=rng.choice([3, 6]),
        platform=rng.choice(["ios", "android"]),
        device_model=rng.choice(_DEVICES),
        browser=rng.choice(_BROWSERS),
        app_version=rng.choice(_APP_VERSIONS),
    )


def _body(ev: _Planned, event_id: str, rng: random.Random) -> dict[str, Any]:
    occurred_us = ev.true_us + (ev.clock_offset_ms or 0) * 1000
    body: dict[str, Any] = {"event_id": event_id}
    if rng.random() < 0.3:
        body["schema_version"] = 1
    body["source"] = ev.source
    body["type"] = ev.type
    body["occurred_at"] = _timestamp(occurred_us, tz_minutes=ev.tz_minutes, digits=ev.digits)
    if ev.customer_id is not None:
        body["customer_id"] = ev.customer_id
    if ev.anonymous_id is not None:
        body["anonymous_id"] = ev.anonymous_id
    if ev.session_id is not None:
        body["session_id"] = ev.session_id
    if ev.properties is not None:
        body["properties"] = ev.properties
    if ev.context is not None:
        body["context"] = ev.context
    if ev.clock_offset_ms is not None:
        # Sent on arrival by a clock `clock_offset_ms` off: the correction recovers `true_us`.
        body["sent_at"] = _sent_at(ev.arrival_us, ev.clock_offset_ms, ev.tz_minutes)
    return body


def _sent_at(received_us: int, offset_ms: int, tz_minutes: int = 0) -> str:
    """`sent_at` of a line received at `received_us` from a clock `offset_ms` off, in whole
    milliseconds like `received_at`, so the correction adds whole milliseconds."""
    return _timestamp((received_us // 1000 + offset_ms) * 1000, tz_minutes=tz_minutes)


def _line(body: Mapping[str, Any], received_us: int) -> bytes:
    """Serializes a body as a line stamped with `received_at`."""
    out = {**body, "received_at": _received(received_us)}
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()


def _template(rng: random.Random, received_us: int) -> dict[str, Any]:
    """A plausible valid body received at `received_us`, for invalid variants to break."""
    occurred = _timestamp(received_us - int(rng.uniform(0.1, 3.0) * _US))
    return {
        "event_id": _uuid(rng),
        "source": "web",
        "type": "page_view",
        "occurred_at": occurred,
        "anonymous_id": f"anon-{rng.getrandbits(48):012x}",
        "properties": {"path": rng.choice(_PATHS)},
        "context": {"platform": "web", "country": rng.choice(_COUNTRIES)},
    }


def _typed(
    rng: random.Random, received_us: int, source: str, type_: str, props: dict[str, Any]
) -> dict[str, Any]:
    body = _template(rng, received_us)
    body.update(source=source, type=type_, properties=props)
    if source != "web":
        body.pop("anonymous_id")
        body["customer_id"] = f"cus_{rng.randint(900_000, 999_999)}"
    return body


def _replace(key: str, value: Any) -> Callable[[random.Random, int], bytes]:
    def make(rng: random.Random, received_us: int) -> bytes:
        return _line({**_template(rng, received_us), key: value}, received_us)

    return make


def _without(*keys: str) -> Callable[[random.Random, int], bytes]:
    def make(rng: random.Random, received_us: int) -> bytes:
        body = _template(rng, received_us)
        for key in keys:
            body.pop(key, None)
        return _line(body, received_us)

    return make


def _props(source: str, type_: str, props: dict[str, Any]) -> Callable[[random.Random, int], bytes]:
    def make(rng: random.Random, received_us: int) -> bytes:
        return _line(_typed(rng, received_us, source, type_, props), received_us)

    return make


def _oversize(rng: random.Random, received_us: int) -> bytes:
    body = _template(rng, received_us)
    body["properties"] = {"path": "/search", "payload": "x" * rng.randint(70_000, 90_000)}
    return _line(body, received_us)


def _truncated(rng: random.Random, received_us: int) -> bytes:
    line = _line(_template(rng, received_us), received_us)
    return line[: rng.randint(1, len(line) - 1)]


def _single_quotes(rng: random.Random, received_us: int) -> bytes:
    body = _template(rng, received_us)
    body["received_at"] = _received(received_us)
    return repr(body).encode()


def _trailing_comma(rng: random.Random, received_us: int) -> bytes:
    return _line(_template(rng, received_us), received_us)[:-1] + b",}"


def _nan(rng: random.Random, received_us: int) -> bytes:
    body = _typed(rng, received_us, "web", "web_vital", {"name": "CLS", "value": 0.5})
    return _line(body, received_us).replace(b'"value":0.5', b'"value":NaN')


def _concatenated(rng: random.Random, received_us: int) -> bytes:
    return _line(_template(rng, received_us), received_us) + _line(
        _template(rng, received_us), received_us
    )


def _plain_text(rng: random.Random, received_us: int) -> bytes:
    return f"GET /collect?e=page_view&t={received_us // 1000} HTTP/1.1".encode()


def _array(rng: random.Random, received_us: int) -> bytes:
    return b"[" + _line(_template(rng, received_us), received_us) + b"]"


def _constant(text: bytes) -> Callable[[random.Random, int], bytes]:
    return lambda rng, received_us: text


def _future(ahead_s: int) -> Callable[[random.Random, int], bytes]:
    def make(rng: random.Random, received_us: int) -> bytes:
        body = _template(rng, received_us)
        body["occurred_at"] = _timestamp(received_us + ahead_s * _US)
        return _line(body, received_us)

    return make


def _future_by_sent_at(rng: random.Random, received_us: int) -> bytes:
    """Looks current, but the client clock is an hour behind: it happened an hour from now."""
    body = _template(rng, received_us)
    body["occurred_at"] = _timestamp(received_us - _US, digits=3)
    body["sent_at"] = _sent_at(received_us, -3_600_000)
    return _line(body, received_us)


def _empty_anonymous_id(rng: random.Random, received_us: int) -> bytes:
    """An empty id next to a valid one: wrong length, not a missing identity."""
    body = {**_template(rng, received_us), "customer_id": "cus_000001", "anonymous_id": ""}
    return _line(body, received_us)


_LONG_ID = "c" * 129

# (reason, variant, line maker) for every stateless rejection the corpus injects.
_INVALID: list[tuple[str, str, Callable[[random.Random, int], bytes]]] = [
    ("too_large", "oversize", _oversize),
    ("invalid_json", "truncated", _truncated),
    ("invalid_json", "single_quotes", _single_quotes),
    ("invalid_json", "trailing_comma", _trailing_comma),
    ("invalid_json", "nan", _nan),
    ("invalid_json", "two_objects", _concatenated),
    ("invalid_json", "plain_text", _plain_text),
    ("not_an_object", "array_of_event", _array),
    ("not_an_object", "string", _constant(b'"page_view"')),
    ("not_an_object", "number", _constant(b"42")),
    ("not_an_object", "null", _constant(b"null")),
    ("not_an_object", "empty_array", _constant(b"[]")),
    ("unknown_schema_version", "v2", _replace("schema_version", 2)),
    ("unknown_schema_version", "v0", _replace("schema_version", 0)),
    ("missing_field", "no_event_id", _without("event_id")),
    ("missing_field", "no_source", _without("source")),
    ("missing_field", "no_type", _without("type")),
    ("missing_field", "no_occurred_at", _without("occurred_at")),
    ("missing_field", "null_event_id", _replace("event_id", None)),
    ("missing_field", "null_occurred_at", _replace("occurred_at", None)),
    ("missing_field", "no_identity", _without("anonymous_id", "customer_id")),
    ("unknown_type", "web_crash", _replace("type", "crash")),
    ("unknown_type", "web_typo", _replace("type", "pageview")),
    ("unknown_type", "app_page_view", _props("app", "page_view", {"path": "/"})),
    ("unknown_type", "support_purchase", _props("support", "purchase", {"order_id": "o-1"})),
    ("invalid_field", "bad_uuid", _replace("event_id", "not-a-uuid")),
    ("invalid_field", "short_uuid", _replace("event_id", "0b5f2a4e-8f4c-4e0a-9d6b-3c2f1e0d9c8")),
    ("invalid_field", "numeric_event_id", _replace("event_id", 12345)),
    ("invalid_field", "unknown_source", _replace("source", "email")),
    ("invalid_field", "naive_occurred_at", _replace("occurred_at", "2024-05-01T10:00:00")),
    ("invalid_field", "garbage_occurred_at", _replace("occurred_at", "yesterday")),
    ("invalid_field", "numeric_occurred_at", _replace("occurred_at", 1714557600)),
    ("invalid_field", "naive_sent_at", _replace("sent_at", "2024-05-01T10:00:00.000")),
    ("invalid_field", "long_customer_id", _replace("customer_id", _LONG_ID)),
    ("invalid_field", "empty_anonymous_id", _empty_anonymous_id),
    ("invalid_field", "numeric_session_id", _replace("session_id", 12345)),
    ("invalid_field", "properties_list", _replace("properties", ["/"])),
    ("invalid_field", "context_number", _replace("context", {"country": "US", "build": 512})),
    ("invalid_field", "context_list", _replace("context", ["US"])),
    ("invalid_field", "csat_6", _props("support", "csat_submitted", {"score": 6})),
    ("invalid_field", "csat_0", _props("support", "csat_submitted", {"score": 0})),
    ("invalid_field", "nps_11", _props("support", "nps_submitted", {"score": 11})),
    ("invalid_field", "nps_negative", _props("support", "nps_submitted", {"score": -1})),
    ("invalid_field", "ces_0", _props("support", "ces_submitted", {"score": 0})),
    ("invalid_field", "ces_8", _props("support", "ces_submitted", {"score": 8})),
    ("invalid_field", "vital_fid", _props("web", "web_vital", {"name": "FID", "value": 12})),
    ("invalid_field", "vital_negative", _props("web", "web_vital", {"name": "LCP", "value": -5})),
    (
        "invalid_field",
        "negative_revenue",
        _props("web", "purchase", {"order_id": "o-x", "revenue": -10, "currency": "USD"}),
    ),
    ("invalid_field", "no_order_id", _props("app", "purchase", {"revenue": 10, "currency": "EUR"})),
    ("invalid_field", "no_path", _props("web", "page_view", {"referrer": "https://x.test/"})),
    ("invalid_field", "no_ticket_id", _props("support", "ticket_opened", {"subject": "refund"})),
    ("invalid_field", "no_screen", _props("app", "screen_view", {})),
    (
        "invalid_field",
        "is_bot_text",
        _props("support", "agent_reply", {"ticket_id": "T-1", "is_bot": "maybe"}),
    ),
    ("future_timestamp", "ahead_1h", _future(3600)),
    ("future_timestamp", "ahead_10min", _future(600)),
    ("future_timestamp", "sent_at_behind", _future_by_sent_at),
]


def _too_late_line(rng: random.Random, received_us: int) -> bytes:
    """An event from three hours ago: an app's offline queue (with `sent_at`, so the clock
    correction puts it back in the past) or a replayed web beacon."""
    true_us = received_us - 3 * 3600 * _US - int(rng.uniform(0, 20) * _MIN)
    if rng.random() < 0.5:
        offset = rng.choice([0, rng.randint(-3_600_000, 3_600_000)])
        body = _typed(rng, received_us, "app", "screen_view", {"screen": "orders"})
        body["occurred_at"] = _timestamp(true_us + offset * 1000, digits=6)
        body["sent_at"] = _sent_at(received_us, offset)
        return _line(body, received_us)
    body = _template(rng, received_us)
    body["occurred_at"] = _timestamp(true_us)
    return _line(body, received_us)


def _flip_case(event_id: str) -> str:
    return event_id.lower() if event_id != event_id.lower() else event_id.upper()


@dataclass(order=True)
class _Item:
    arrival_us: int
    seq: int
    line: bytes = field(compare=False)


def make_corpus(
    path: Path,
    *,
    lines: int,
    seed: int,
    start: datetime,
    duration: timedelta = timedelta(hours=2),
    duplicate_rate: float = 0.03,
    invalid_rate: float = 0.02,
) -> CorpusInfo:
    """Writes `lines` JSONL lines to `path`, the same bytes for the same arguments."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    rng = random.Random(seed)
    start_us = (start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    duration_us = duration // timedelta(microseconds=1)
    n_duplicates = round(lines * duplicate_rate)
    n_invalid = round(lines * invalid_rate)
    n_late = max(1, lines // 3000) if duration >= timedelta(hours=1) else 0
    n_base = lines - n_duplicates - n_invalid - n_late
    if n_base <= 0:
        raise ValueError("too few lines for the requested rates")

    # Journeys: people arrive at a steady rate, their events merge in order of arrival.
    counters = _Counters()
    heap: list[tuple[int, int, _Planned]] = []
    seq = 0
    next_person = start_us
    person_gap = duration_us * _EVENTS_PER_PERSON / n_base
    base: list[_Planned] = []
    while len(base) < n_base:
        while not heap or next_person <= heap[0][0]:
            journey = _Journey(rng, _person(rng), counters, next_person)
            persona = rng.choices([p for p, _ in _PERSONAS], weights=[w for _, w in _PERSONAS])
            persona[0](journey)
            for ev in journey.events:
                heapq.heappush(heap, (ev.arrival_us, seq, ev))
                seq += 1
            next_person += int(rng.expovariate(1.0) * person_gap) + 1
        base.append(heapq.heappop(heap)[2])

    items: list[_Item] = []
    bodies: list[dict[str, Any]] = []
    uppercase = 0
    for i, ev in enumerate(base):
        event_id = _uuid(rng)
        if rng.random() < 0.01:
            event_id = event_id.upper()
        uppercase += event_id != event_id.lower()
        body = _body(ev, event_id, rng)
        bodies.append(body)
        items.append(_Item(ev.arrival_us, 2 * i, _line(body, ev.arrival_us)))

    # Re-sends of accepted events, the same body: right after the original (the same line) or
    # up to three minutes later (a later `received_at`).
    seq = 2 * n_base
    for i in rng.choices(range(n_base), k=n_duplicates):
        ev, body = base[i], bodies[i]
        if rng.random() < 0.1:
            body = {**body, "event_id": _flip_case(body["event_id"])}
        uppercase += body["event_id"] != body["event_id"].lower()
        if rng.random() < 0.35:
            items.append(_Item(ev.arrival_us, 2 * i + 1, _line(body, ev.arrival_us)))
        else:
            arrival = ev.arrival_us + int(rng.uniform(1, 180) * _US)
            items.append(_Item(arrival, seq, _line(body, arrival)))
            seq += 1

    first_us, last_us = base[0].arrival_us, base[-1].arrival_us
    too_large = min(3, max(1, n_invalid // 150))
    others = [v for v in _INVALID if v[0] != "too_large"]
    chosen = [_INVALID[0]] * min(too_large, n_invalid)
    rest = n_invalid - len(chosen)
    chosen += rng.sample(others, min(rest, len(others)))
    chosen += rng.choices(others, k=rest - min(rest, len(others)))
    invalid: Counter[str] = Counter()
    variants: Counter[str] = Counter()
    for reason, variant, maker in chosen:
        arrival = rng.randint(first_us, last_us)
        items.append(_Item(arrival, seq, maker(rng, arrival)))
        seq += 1
        invalid[reason] += 1
        variants[variant] += 1

    late_from = start_us + 35 * _MIN
    if n_late and last_us <= late_from:
        raise ValueError("the corpus ends before 35 minutes of event time: add lines")
    for _ in range(n_late):
        arrival = rng.randint(late_from, last_us)
        items.append(_Item(arrival, seq, _too_late_line(rng, arrival)))
        seq += 1

    items.sort()
    with path.open("wb") as f:
        for item in items:
            f.write(item.line + b"\n")

    identities = {ev.customer_id or ev.anonymous_id for ev in base}
    linked = {ev.anonymous_id for ev in base if ev.customer_id and ev.anonymous_id}
    return CorpusInfo(
        path=path,
        lines=len(items),
        seed=seed,
        first_received=_utc(items[0].arrival_us),
        last_received=_utc(items[-1].arrival_us),
        valid=n_base,
        duplicates=n_duplicates,
        too_late=n_late,
        invalid=dict(invalid),
        invalid_variants=dict(variants),
        out_of_order=sum(ev.late for ev in base),
        with_sent_at=sum(ev.clock_offset_ms is not None for ev in base),
        clock_skewed=sum(bool(ev.clock_offset_ms) for ev in base),
        uppercase_ids=uppercase,
        identities=len(identities),
        linked_anonymous_ids=len(linked),
        types=dict(Counter(f"{ev.source}/{ev.type}" for ev in base)),
    )


def _utc(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us - us % 1000)
