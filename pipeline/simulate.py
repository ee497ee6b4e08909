"""Synthetic touchpoint traffic that behaves like a shop's real customers.

`xp demo`, the benchmarks and the alert tests need traffic whose numbers mean
something: a funnel that narrows, scores that follow the experience people
had, crashes that cluster on one app version, vitals that differ by device.
Every probability and typical duration lives in one :class:`Behavior`, and
:class:`SegmentEffect` scales it for one `context` value, so a segment can be
made to misbehave (an incident) without touching the journey code.

The output is a plain iterator of contract-valid event dicts in increasing
`occurred_at` order; pacing belongs to whoever produces them.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson


@dataclass(frozen=True)
class Behavior:
    """How people in one segment behave: probabilities (`*_p`) and typical values.

    Probabilities are per visit unless they say per page or per screen;
    durations are medians in seconds, vitals medians in their own units.
    """

    # web visits
    bounce_p: float = 0.42
    pages_mean: float = 4.0
    search_p: float = 0.22
    click_p: float = 0.5
    error_p: float = 0.012  # per page or screen
    vitals_p: float = 0.25  # per page: the RUM sample rate
    signup_p: float = 0.06  # an anonymous visitor creates an account without buying
    account_p: float = 0.55  # an anonymous visitor at checkout already has an account
    presale_chat_p: float = 0.03
    return_p: float = 0.22
    # shopping, on web and in the app
    cart_p: float = 0.3
    checkout_p: float = 0.55
    purchase_p: float = 0.72
    repeat_p: float = 0.15  # a buyer comes back and buys again
    # app sessions
    screens_mean: float = 6.0
    tap_p: float = 0.7
    app_signup_p: float = 0.35  # a new install creates an account during onboarding
    crash_p: float = 0.003  # per screen
    relaunch_p: float = 0.55  # the app is opened again right after a crash
    # support
    ticket_p: float = 0.1  # a buyer contacts support about the order
    crash_ticket_p: float = 0.12
    bot_p: float = 0.45  # a bot answers before a human does
    first_response_s: float = 150.0
    resolution_s: float = 540.0
    reopen_p: float = 0.08
    csat_p: float = 0.5
    ces_p: float = 0.35
    nps_p: float = 0.25  # a buyer or a resolved ticket gets an NPS survey
    # web vitals medians; thresholds for "good" are LCP 2500, INP 200, CLS 0.1
    lcp_ms: float = 1450.0
    inp_ms: float = 105.0
    cls: float = 0.04
    fcp_ms: float = 750.0
    ttfb_ms: float = 350.0


_BEHAVIOR_FIELDS = frozenset(f.name for f in fields(Behavior))


@dataclass(frozen=True)
class SegmentEffect:
    """Multiplies `Behavior` fields for people whose `context[dimension] == value`.

    Probabilities are capped at 1 after scaling. Effects on the same field
    multiply, so an incident is one more effect on top of the defaults. An
    effect with `start_s`/`end_s` (event time, seconds after the simulation's
    start) holds for people arriving, and support tickets opening, within
    that span: an incident that begins and ends.
    """

    dimension: str
    value: str
    factors: Mapping[str, float]
    start_s: float | None = None
    end_s: float | None = None

    def __post_init__(self) -> None:
        unknown = set(self.factors) - _BEHAVIOR_FIELDS
        if unknown:
            raise ValueError(f"unknown Behavior fields in SegmentEffect: {sorted(unknown)}")

    def active(self, offset_s: float) -> bool:
        after_start = self.start_s is None or offset_s >= self.start_s
        return after_start and (self.end_s is None or offset_s < self.end_s)


#: The segments that differ in ordinary traffic: phones are slower to render,
#: far-away countries wait longer for the first byte, the app converts better
#: than the web, and release 5.2.0 crashes far more often than its predecessors.
DEFAULT_EFFECTS: tuple[SegmentEffect, ...] = (
    SegmentEffect("device", "mobile", {"lcp_ms": 1.35, "inp_ms": 1.7, "fcp_ms": 1.3, "cls": 1.3}),
    SegmentEffect("device", "tablet", {"lcp_ms": 1.2, "inp_ms": 1.3, "fcp_ms": 1.15}),
    SegmentEffect("browser", "Firefox", {"lcp_ms": 1.1, "inp_ms": 1.15}),
    SegmentEffect("browser", "Samsung Internet", {"lcp_ms": 1.25, "inp_ms": 1.3}),
    SegmentEffect("browser", "Safari", {"inp_ms": 0.9, "cls": 0.8}),
    SegmentEffect("country", "IN", {"ttfb_ms": 1.9, "lcp_ms": 1.3, "fcp_ms": 1.3}),
    SegmentEffect("country", "BR", {"ttfb_ms": 1.5, "lcp_ms": 1.15, "fcp_ms": 1.15}),
    SegmentEffect("country", "JP", {"ttfb_ms": 0.8}),
    SegmentEffect("platform", "ios", {"cart_p": 1.35, "crash_p": 0.7}),
    SegmentEffect("platform", "android", {"cart_p": 1.25}),
    SegmentEffect("app_version", "5.2.0", {"crash_p": 8.0, "error_p": 1.5}),
    SegmentEffect("platform", "phone", {"first_response_s": 0.3, "resolution_s": 0.7}),
    SegmentEffect("platform", "email", {"first_response_s": 3.0, "resolution_s": 1.6}),
)

#: Named incidents for `xp demo --incident`, each hitting one segment, with the
#: story a newcomer should see in the alert that names it.
INCIDENTS: dict[str, tuple[str, SegmentEffect]] = {
    "chrome-search-broken": (
        "a Chrome update breaks search, product links and the cart on the web shop",
        SegmentEffect("browser", "Chrome", {"search_p": 0.05, "click_p": 0.05, "cart_p": 0.05}),
    ),
    "chat-support-slow": (
        "the chat team is short-staffed: first replies take eight times as long, resolutions four",
        SegmentEffect("platform", "chat", {"first_response_s": 8.0, "resolution_s": 4.0}),
    ),
    "app-crash-5.1.3": (
        "a server change makes app version 5.1.3 crash on most screens",
        SegmentEffect("app_version", "5.1.3", {"crash_p": 100.0}),
    ),
}


def incident(name: str, start_s: float, end_s: float) -> SegmentEffect:
    """The named incident's effect, active from `start_s` to `end_s` of event time."""
    if name not in INCIDENTS:
        raise ValueError(f"unknown incident {name!r}; known: {', '.join(INCIDENTS)}")
    return replace(INCIDENTS[name][1], start_s=start_s, end_s=end_s)


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate; the same config and seed always yield the same events.

    `customers` people arrive uniformly over `warmup_s` before `start` until
    the end of the span, so the first minutes already carry steady traffic
    instead of a ramp; only events inside `[start, start + duration_s)` are
    yielded. `start` defaults to now minus the span, so the events are recent
    enough for the pipeline's lateness and clock-skew checks.
    """

    customers: int = 3000
    duration_s: float = 1800.0
    seed: int = 7
    start: datetime | None = None
    anonymous_share: float = 0.55  # arrive without an account id (cookie or device id)
    app_share: float = 0.35  # arrive in the app rather than on the web
    support_share: float = 0.05  # existing customers who only contact support
    warmup_s: float = 600.0
    behavior: Behavior = Behavior()
    effects: tuple[SegmentEffect, ...] = DEFAULT_EFFECTS

    def __post_init__(self) -> None:
        if self.customers < 0:
            raise ValueError("customers must be >= 0")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("duration_s must be > 0 and warmup_s >= 0")
        for name in ("anonymous_share", "app_share", "support_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1")
        if self.start is not None and self.start.utcoffset() is None:
            raise ValueError("start must be timezone-aware")


def encode(event: Mapping[str, Any]) -> bytes:
    """The wire bytes of one event, as a product service would send them."""
    return orjson.dumps(event)


def simulate(config: SimulationConfig | None = None) -> Iterator[dict[str, Any]]:
    """Yield the simulated events in increasing `occurred_at` order."""
    return _Simulation(config or SimulationConfig()).run()


# --- segments -------------------------------------------------------------

#: (country, weight, locale, UTC offset in minutes, currency, units per USD)
_COUNTRIES: tuple[tuple[str, float, str, int, str, float], ...] = (
    ("US", 0.30, "en-US", -300, "USD", 1.0),
    ("BR", 0.14, "pt-BR", -180, "BRL", 5.0),
    ("DE", 0.12, "de-DE", 60, "EUR", 0.92),
    ("IN", 0.12, "en-IN", 330, "INR", 83.0),
    ("GB", 0.10, "en-GB", 0, "GBP", 0.79),
    ("FR", 0.08, "fr-FR", 60, "EUR", 0.92),
    ("MX", 0.08, "es-MX", -360, "MXN", 17.0),
    ("JP", 0.06, "ja-JP", 540, "JPY", 150.0),
)
_COUNTRY_WEIGHTS = [c[1] for c in _COUNTRIES]
_ZERO_DECIMAL_CURRENCIES = frozenset({"JPY"})
_TZ = {c[0]: timezone(timedelta(minutes=c[3])) for c in _COUNTRIES}
_MONEY = {c[0]: (c[4], c[5]) for c in _COUNTRIES}

#: device -> (browser, weight) pairs; the web's device mix is below.
_BROWSERS: dict[str, tuple[tuple[str, float], ...]] = {
    "desktop": (("Chrome", 0.64), ("Edge", 0.15), ("Safari", 0.11), ("Firefox", 0.10)),
    "mobile": (("Chrome", 0.52), ("Safari", 0.40), ("Samsung Internet", 0.08)),
    "tablet": (("Safari", 0.6), ("Chrome", 0.4)),
}
_WEB_DEVICES = (("desktop", 0.45), ("mobile", 0.48), ("tablet", 0.07))
_APP_PLATFORMS = (("android", 0.55), ("ios", 0.45))
_APP_VERSIONS: dict[str, tuple[tuple[str, float], ...]] = {
    "android": (("5.2.0", 0.38), ("5.1.3", 0.47), ("5.0.9", 0.15)),
    "ios": (("5.2.0", 0.52), ("5.1.3", 0.38), ("5.0.9", 0.10)),
}
_SUPPORT_MEDIA = (("chat", 0.55), ("email", 0.35), ("phone", 0.10))

_REFERRERS = (
    "https://www.google.com/",
    "https://www.instagram.com/",
    "https://news.example.com/deals",
    "https://mail.example.com/newsletter",
    "",
)
_LANDING = ("/", "/", "/sale", "/new-arrivals", "/blog/how-to-choose-running-shoes")
_CATEGORIES = ("shoes", "jackets", "bags", "watches", "outdoor", "kids")
_QUERIES = ("running shoes", "rain jacket", "backpack", "gift", "smart watch", "sandals", "tent")
_TARGETS = ("product-card", "filter", "sort", "add-to-wishlist", "size-guide", "banner")
_SCREENS = ("home", "search", "category", "product", "wishlist", "profile", "orders")
_ERRORS_WEB = (
    "TypeError: Cannot read properties of undefined (reading 'price')",
    "ChunkLoadError: Loading chunk 42 failed",
    "NetworkError when attempting to fetch resource",
)
_ERRORS_APP = ("HTTP 503 from /api/cart", "image decode failed", "token refresh failed")
_CRASHES = (
    "java.lang.NullPointerException at CartViewModel.total",
    "EXC_BAD_ACCESS in ProductImageCache",
    "OutOfMemoryError in FeedAdapter",
)


def _weighted(rng: random.Random, options: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([o[0] for o in options], [o[1] for o in options])[0]


class _Person:
    """One simulated person: ids, segment, mood and what they did so far."""

    __slots__ = (
        "anonymous_id",
        "app_context",
        "behavior",
        "country",
        "customer_id",
        "logged_in",
        "mood",
        "purchases",
        "support_context",
        "tz",
        "web_context",
    )

    def __init__(self, customer_id: str, country: str, mood: float, behavior: Behavior) -> None:
        self.customer_id = customer_id
        self.anonymous_id: str | None = None
        self.logged_in = False
        self.country = country
        self.tz = _TZ[country]
        self.web_context: dict[str, str] = {}
        self.app_context: dict[str, str] = {}
        self.support_context: dict[str, str] = {}
        self.behavior = behavior
        self.mood = mood
        self.purchases = 0


class _Simulation:
    """Generates people in arrival order and releases their events in time order.

    A person's events all lie after their arrival, so once the next arrival
    is at time t every queued event before t is final and can be yielded:
    memory stays proportional to the people active at once.
    """

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        start = config.start or datetime.now(UTC) - timedelta(seconds=config.duration_s)
        self.lo = start.timestamp()
        self.hi = self.lo + config.duration_s
        self.queue: list[tuple[float, int, dict[str, Any]]] = []
        self.seq = 0
        self.tickets = 100_000
        self.behaviors: dict[tuple[int, ...], Behavior] = {}

    def run(self) -> Iterator[dict[str, Any]]:
        cfg, rng = self.config, self.rng
        first = self.lo - cfg.warmup_s
        span = self.hi - first
        arrivals = sorted(first + rng.random() * span for _ in range(cfg.customers))
        queue = self.queue
        for arrival in arrivals:
            while queue and queue[0][0] < arrival:
                yield heapq.heappop(queue)[2]
            self.person(arrival)
        while queue:
            yield heapq.heappop(queue)[2]

    # --- people -----------------------------------------------------------

    def person(self, t: float) -> None:
        cfg, rng = self.config, self.rng
        customer_id = f"cus_{rng.getrandbits(48):012x}"
        country = rng.choices(_COUNTRIES, _COUNTRY_WEIGHTS)[0]
        p = _Person(customer_id, country[0], rng.betavariate(6.0, 1.7), cfg.behavior)
        geo = {"country": country[0], "locale": country[2]}
        p.support_context = {"platform": _weighted(rng, _SUPPORT_MEDIA), **geo}
        if rng.random() < cfg.support_share:
            p.logged_in = True
            self.ticket(p, t, chat=p.support_context["platform"] == "chat")
            return
        anonymous = rng.random() < cfg.anonymous_share
        if rng.random() < cfg.app_share:
            platform = _weighted(rng, _APP_PLATFORMS)
            p.app_context = {
                "platform": platform,
                "app_version": _weighted(rng, _APP_VERSIONS[platform]),
                "device": "tablet" if rng.random() < 0.08 else "mobile",
                **geo,
            }
            p.anonymous_id = f"dev_{rng.getrandbits(64):016x}"
            p.logged_in = not anonymous
            p.behavior = self.behavior_for(p.app_context, t)
            self.app_session(p, t, install=anonymous)
        else:
            device = _weighted(rng, _WEB_DEVICES)
            p.web_context = {
                "platform": "web",
                "browser": _weighted(rng, _BROWSERS[device]),
                "device": device,
                **geo,
            }
            # Known visitors are recognised by their login; half still carry the cookie.
            if anonymous or rng.random() < 0.5:
                p.anonymous_id = f"anon_{rng.getrandbits(64):016x}"
            p.logged_in = not anonymous
            p.behavior = self.behavior_for(p.web_context, t)
            self.web_visit(p, t, returning=False)

    def behavior_for(self, context: Mapping[str, str], t: float) -> Behavior:
        """The segment's behavior at time `t`, computed once per set of effects that apply."""
        effects = self.config.effects
        key = tuple(
            i
            for i, effect in enumerate(effects)
            if context.get(effect.dimension) == effect.value and effect.active(t - self.lo)
        )
        cached = self.behaviors.get(key)
        if cached is not None:
            return cached
        base = self.config.behavior
        scale: dict[str, float] = {}
        for i in key:
            for name, factor in effects[i].factors.items():
                scale[name] = scale.get(name, 1.0) * factor
        changes = {}
        for name, factor in scale.items():
            value = getattr(base, name) * factor
            changes[name] = min(value, 1.0) if name.endswith("_p") else value
        behavior = replace(base, **changes)
        self.behaviors[key] = behavior
        return behavior

    # --- output -----------------------------------------------------------

    def emit(
        self,
        p: _Person,
        t: float,
        source: str,
        event_type: str,
        context: dict[str, str],
        session_id: str,
        properties: dict[str, Any] | None = None,
        ids: tuple[str | None, str | None] | None = None,
    ) -> None:
        """Queue one event; `ids` pins (customer_id, anonymous_id), as a ticket does."""
        if not self.lo <= t < self.hi:
            return
        if ids is None:
            customer, anonymous = p.customer_id if p.logged_in else None, p.anonymous_id
        else:
            customer, anonymous = ids
        event: dict[str, Any] = {
            "event_id": _uuid4(self.rng.getrandbits(128)),
            "source": source,
            "type": event_type,
            "occurred_at": datetime.fromtimestamp(t, p.tz).isoformat(timespec="milliseconds"),
        }
        if customer is not None:
            event["customer_id"] = customer
        if anonymous is not None:
            event["anonymous_id"] = anonymous
        event["session_id"] = session_id
        event["properties"] = properties if properties is not None else {}
        event["context"] = dict(context)
        heapq.heappush(self.queue, (t, self.seq, event))
        self.seq += 1

    def session_id(self) -> str:
        return f"s_{self.rng.getrandbits(64):016x}"

    def dwell(self, mean_s: float) -> float:
        return 1.0 + self.rng.expovariate(1.0 / mean_s)

    def count(self, mean: float) -> int:
        """A geometric count >= 1 with the given mean: how long people keep going."""
        if mean <= 1.0:
            return 1
        return 1 + int(math.log(1.0 - self.rng.random()) / math.log(1.0 - 1.0 / mean))

    # --- web --------------------------------------------------------------

    def web_visit(self, p: _Person, t: float, returning: bool) -> None:
        rng, b, ctx = self.rng, p.behavior, p.web_context
        sid = self.session_id()
        path = rng.choice(_LANDING)
        t = self.page(p, t, sid, path, rng.choice(_REFERRERS))
        if not returning and rng.random() < b.bounce_p:
            return
        for _ in range(self.count(b.pages_mean)):
            if rng.random() < b.search_p:
                search = rng.choice(_QUERIES)
                self.emit(p, t, "web", "search", ctx, sid, {"query": search})
                t += self.dwell(6.0)
                path = f"/search?q={search.replace(' ', '+')}"
            elif rng.random() < b.click_p:
                self.emit(p, t, "web", "click", ctx, sid, {"target": rng.choice(_TARGETS)})
                t += self.dwell(2.0)
                path = f"/{rng.choice(_CATEGORIES)}/p/{rng.randrange(1000, 9999)}"
            else:
                path = f"/{rng.choice(_CATEGORIES)}"
            t = self.page(p, t, sid, path, None)
            if not p.logged_in and rng.random() < b.signup_p:
                p.logged_in = True
                self.emit(p, t, "web", "signup", ctx, sid, {"method": "email"})
                t += self.dwell(10.0)
            if rng.random() < b.presale_chat_p:
                self.ticket(p, t, chat=True, about_order=False)
        if (returning and p.purchases and rng.random() < b.repeat_p) or rng.random() < b.cart_p:
            t = self.shop(p, t, "web", ctx, sid)
        if not returning and rng.random() < b.return_p:
            self.web_visit(p, t + 300.0 + rng.random() * 900.0, returning=True)

    def page(self, p: _Person, t: float, sid: str, path: str, referrer: str | None) -> float:
        """A page view, its sampled vitals and errors; returns when the visitor leaves it."""
        rng, b, ctx = self.rng, p.behavior, p.web_context
        props: dict[str, Any] = {"path": path}
        if referrer:
            props["referrer"] = referrer
        self.emit(p, t, "web", "page_view", ctx, sid, props)
        leave = t + self.dwell(22.0)
        if rng.random() < b.vitals_p:
            ttfb = b.ttfb_ms * rng.lognormvariate(0.0, 0.55)
            fcp = ttfb + b.fcp_ms * rng.lognormvariate(0.0, 0.4)
            lcp = max(fcp, b.lcp_ms * rng.lognormvariate(0.0, 0.45))
            self.vital(p, t + ttfb / 1000, sid, "TTFB", round(ttfb))
            self.vital(p, t + fcp / 1000, sid, "FCP", round(fcp))
            self.vital(p, t + lcp / 1000, sid, "LCP", round(lcp))
            # CLS and INP are final only when the page is hidden.
            cls = 0.0 if rng.random() < 0.35 else b.cls * rng.lognormvariate(0.0, 1.0)
            self.vital(p, leave - 0.05, sid, "CLS", round(cls, 4))
            if rng.random() < 0.8:
                inp = b.inp_ms * rng.lognormvariate(0.0, 0.6)
                self.vital(p, leave - 0.05, sid, "INP", round(inp))
        if rng.random() < b.error_p:
            message = rng.choice(_ERRORS_WEB)
            self.emit(p, t + 0.5, "web", "error", ctx, sid, {"message": message, "fatal": False})
            p.mood -= 0.05
        return leave

    def vital(self, p: _Person, t: float, sid: str, name: str, value: float) -> None:
        self.emit(p, t, "web", "web_vital", p.web_context, sid, {"name": name, "value": value})

    # --- shopping, shared by web and app ------------------------------------

    def shop(self, p: _Person, t: float, source: str, ctx: dict[str, str], sid: str) -> float:
        """Cart, checkout and maybe a purchase; anonymous buyers identify at checkout."""
        rng, b = self.rng, p.behavior
        usd = round(rng.lognormvariate(math.log(45.0), 0.7), 2)
        self.emit(p, t, source, "add_to_cart", ctx, sid, {"sku": _sku(rng), "value": usd})
        t += self.dwell(40.0)
        if rng.random() >= b.checkout_p:
            return t
        if not p.logged_in:
            p.logged_in = True
            if rng.random() >= b.account_p:
                self.emit(p, t, source, "signup", ctx, sid, {"method": "checkout"})
                t += self.dwell(30.0)
        self.emit(p, t, source, "checkout_started", ctx, sid, {})
        t += self.dwell(60.0)
        if rng.random() >= b.purchase_p:
            if rng.random() < 0.3:
                error = {"message": "payment declined", "fatal": False}
                self.emit(p, t, source, "error", ctx, sid, error)
                p.mood -= 0.1
            return t
        currency, rate = _MONEY[p.country]
        digits = 0 if currency in _ZERO_DECIMAL_CURRENCIES else 2
        order = {
            "order_id": f"ord_{rng.getrandbits(40):010x}",
            "revenue": round(usd * rate, digits),
            "currency": currency,
        }
        self.emit(p, t, source, "purchase", ctx, sid, order)
        p.purchases += 1
        p.mood += 0.05
        if rng.random() < b.ticket_p:
            self.ticket(p, t + 120.0 + rng.random() * 600.0, chat=rng.random() < 0.6)
        if rng.random() < b.nps_p:
            self.survey(p, t + 180.0 + rng.random() * 720.0, "nps")
        return t + self.dwell(20.0)

    # --- app --------------------------------------------------------------

    def app_session(self, p: _Person, t: float, install: bool, screens: int = 0) -> None:
        rng, b, ctx = self.rng, p.behavior, p.app_context
        sid = self.session_id()
        if install:
            self.emit(p, t, "app", "app_install", ctx, sid, {})
            t += self.dwell(8.0)
        self.emit(p, t, "app", "app_open", ctx, sid, {})
        t += self.dwell(3.0)
        if install and rng.random() < b.app_signup_p:
            p.logged_in = True
            self.emit(p, t, "app", "signup", ctx, sid, {"method": "onboarding"})
            t += self.dwell(20.0)
        for _ in range(screens or self.count(b.screens_mean)):
            self.emit(p, t, "app", "screen_view", ctx, sid, {"screen": rng.choice(_SCREENS)})
            t += self.dwell(4.0)
            if rng.random() < b.tap_p:
                self.emit(p, t, "app", "tap", ctx, sid, {"target": rng.choice(_TARGETS)})
                t += self.dwell(8.0)
            if rng.random() < b.error_p:
                error = {"message": rng.choice(_ERRORS_APP), "fatal": False}
                self.emit(p, t, "app", "error", ctx, sid, error)
                p.mood -= 0.05
            if rng.random() < b.crash_p:
                self.emit(p, t, "app", "crash", ctx, sid, {"message": rng.choice(_CRASHES)})
                p.mood -= 0.25
                if p.logged_in and rng.random() < b.crash_ticket_p:
                    self.ticket(p, t + 60.0 + rng.random() * 300.0, chat=True)
                if rng.random() < b.relaunch_p:
                    self.app_session(p, t + self.dwell(20.0), install=False, screens=2)
                return
        if rng.random() < b.cart_p or (p.purchases and rng.random() < b.repeat_p):
            t = self.shop(p, t, "app", ctx, sid)
        if not screens and rng.random() < b.return_p:
            self.app_session(p, t + 300.0 + rng.random() * 900.0, install=False)

    # --- support ----------------------------------------------------------

    def ticket(self, p: _Person, t: float, chat: bool, about_order: bool = True) -> None:
        """A support conversation; its ids are fixed when it opens, as a helpdesk would."""
        rng = self.rng
        self.tickets += rng.randrange(1, 4)
        tid = {"ticket_id": f"T-{self.tickets}"}
        ctx = p.support_context if not chat else {**p.support_context, "platform": "chat"}
        behavior = self.behavior_for(ctx, t)
        ids = (p.customer_id, None) if p.logged_in else (None, p.anonymous_id)
        sid = f"conv_{tid['ticket_id']}"
        if chat:
            self.emit(p, t, "support", "chat_started", ctx, sid, {}, ids)
            t += self.dwell(10.0)
        opened = t
        self.emit(p, t, "support", "ticket_opened", ctx, sid, dict(tid), ids)
        if rng.random() < behavior.bot_p:
            bot = {**tid, "is_bot": True}
            replied = t + 2.0 + rng.random() * 15.0
            self.emit(p, replied, "support", "agent_reply", ctx, sid, bot, ids)
        t = opened + behavior.first_response_s * rng.lognormvariate(0.0, 0.7)
        self.emit(p, t, "support", "agent_reply", ctx, sid, {**tid, "is_bot": False}, ids)
        resolution = behavior.resolution_s * rng.lognormvariate(0.0, 0.6)
        for _ in range(rng.randrange(0, 3)):
            t += self.dwell(resolution / 4)
            self.emit(p, t, "support", "agent_reply", ctx, sid, {**tid, "is_bot": False}, ids)
        t = max(t + 30.0, opened + resolution)
        self.emit(p, t, "support", "ticket_resolved", ctx, sid, dict(tid), ids)
        if t - opened > 2 * behavior.resolution_s:
            p.mood -= 0.2
        if about_order and rng.random() < behavior.reopen_p:
            p.mood -= 0.25
            t += 120.0 + rng.random() * 480.0
            self.emit(p, t, "support", "ticket_reopened", ctx, sid, dict(tid), ids)
            t += behavior.first_response_s * rng.lognormvariate(0.0, 0.7)
            self.emit(p, t, "support", "agent_reply", ctx, sid, {**tid, "is_bot": False}, ids)
            t += self.dwell(behavior.resolution_s / 2)
            self.emit(p, t, "support", "ticket_resolved", ctx, sid, dict(tid), ids)
        if rng.random() < behavior.csat_p:
            self.survey(p, t + 30.0 + rng.random() * 270.0, "csat", ctx, sid, ids)
        if rng.random() < behavior.ces_p:
            self.survey(p, t + 40.0 + rng.random() * 270.0, "ces", ctx, sid, ids)
        if about_order and rng.random() < behavior.nps_p:
            self.survey(p, t + 600.0 + rng.random() * 600.0, "nps", ctx, sid, ids)

    def survey(
        self,
        p: _Person,
        t: float,
        kind: str,
        ctx: dict[str, str] | None = None,
        sid: str | None = None,
        ids: tuple[str | None, str | None] | None = None,
    ) -> None:
        """A score that follows the person's mood, so bad experiences show in the scores."""
        rng = self.rng
        mood = min(1.0, max(0.0, p.mood))
        if kind == "csat":
            score = _clamp(round(1 + 4 * mood + rng.gauss(0.0, 0.7)), 1, 5)
        elif kind == "ces":
            score = _clamp(round(1 + 6 * mood + rng.gauss(0.0, 0.9)), 1, 7)
        else:
            score = _clamp(round(10 * mood + rng.gauss(0.0, 1.3)), 0, 10)
        ids = ids or ((p.customer_id, None) if p.logged_in else (None, p.anonymous_id))
        ctx = ctx or {**p.support_context, "platform": "survey"}
        sid = sid or f"survey_{rng.getrandbits(48):012x}"
        self.emit(p, t, "support", f"{kind}_submitted", ctx, sid, {"score": score}, ids)


#: Clears the version and variant bits of 128 random bits, then sets version 4, variant RFC 4122.
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)


def _uuid4(bits: int) -> str:
    """The text of `uuid.UUID(int=bits, version=4)` without the object, which cost a third
    of the time of a whole event."""
    h = f"{(bits & _UUID_CLEAR) | _UUID_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _sku(rng: random.Random) -> str:
    return f"SKU-{rng.choice(_CATEGORIES)[:3].upper()}-{rng.randrange(1000, 9999)}"


def _clamp(value: int, low: int, high: int) -> int:
    return low if value < low else high if value > high else value
