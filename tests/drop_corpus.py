"""Corpora for the drop-alert acceptance tests, from a generator of their own.

Deliberately independent of `pipeline/simulate.py`, on whose traffic the
detector's defaults were tuned: other segments (a `plan` dimension the
simulator never sends, other countries and browsers), other probabilities,
timings, sizes and seeds, and another way of injecting a drop. Here a drop
acts on the decision itself: from `start` to `end` of event time, people of
one segment of one channel who would have entered a stage enter it with
their probability scaled by `factor`, so the drop begins the moment the stage
breaks rather than as new visitors arrive.

Everyone is a signed-in customer (no identity stitching), so the funnel of
`xp.stage_minute` is exactly the decisions made here.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

_COUNTRIES = (("US", 0.4), ("CA", 0.1), ("GB", 0.12), ("ES", 0.1), ("IT", 0.08), ("AU", 0.2))
_BROWSERS = (("chrome", 0.5), ("safari", 0.25), ("firefox", 0.15), ("edge", 0.1))
_DEVICES = (("desktop", 0.55), ("phone", 0.4), ("tablet", 0.05))
_PLANS = (("free", 0.6), ("plus", 0.3), ("business", 0.1))
_APP = (("ios", 0.45), ("android", 0.55))
_VERSIONS = (("7.0.1", 0.5), ("7.1.0", 0.35), ("6.9.4", 0.15))
_MEDIA = (("chat", 0.6), ("email", 0.4))
#: (median, spread) of web vitals, lognormal.
_VITALS = {"LCP": (1900.0, 0.5), "INP": (140.0, 0.6), "CLS": (0.05, 0.9)}


@dataclass(frozen=True)
class Drop:
    """Entering `stage` in `channel` gets `factor` times as likely for one segment."""

    channel: str
    stage: str
    dimension: str
    value: str
    start: datetime
    end: datetime
    factor: float


def _pick(rng: random.Random, options: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([o[0] for o in options], [o[1] for o in options])[0]


class _Writer:
    def __init__(self, rng: random.Random, start: datetime, end: datetime) -> None:
        self.rng = rng
        self.lo, self.hi = start.timestamp(), end.timestamp()
        self.events: list[tuple[float, int, dict[str, Any]]] = []

    def emit(
        self,
        t: float,
        source: str,
        etype: str,
        customer: str,
        session: str,
        context: dict[str, str],
        properties: dict[str, Any] | None = None,
    ) -> None:
        if not self.lo <= t < self.hi:
            return
        event = {
            "event_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "source": source,
            "type": etype,
            "occurred_at": datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds"),
            "customer_id": customer,
            "session_id": session,
            "properties": properties or {},
            "context": context,
        }
        self.events.append((t, len(self.events), event))


def _decide(
    rng: random.Random,
    p: float,
    drop: Drop | None,
    channel: str,
    stage: str,
    context: dict[str, str],
    t: float,
) -> bool:
    if (
        drop is not None
        and drop.channel == channel
        and drop.stage == stage
        and context.get(drop.dimension) == drop.value
        and drop.start.timestamp() <= t < drop.end.timestamp()
    ):
        p *= drop.factor
    return rng.random() < p


def write_corpus(
    path: Path,
    *,
    customers: int,
    start: datetime,
    duration: timedelta,
    seed: int,
    drop: Drop | None = None,
) -> int:
    """Write the corpus as JSON lines in event-time order; returns the number of lines."""
    rng = random.Random(seed)
    end = start + duration
    out = _Writer(rng, start, end)
    lo = start.timestamp()
    for n in range(customers):
        t = lo + rng.random() * duration.total_seconds()
        customer = f"buyer-{seed}-{n}"
        country, plan = _pick(rng, _COUNTRIES), _pick(rng, _PLANS)
        session = f"{customer}-s1"
        if rng.random() < 0.6:
            context = {
                "country": country,
                "plan": plan,
                "browser": _pick(rng, _BROWSERS),
                "device": _pick(rng, _DEVICES),
            }
            bought = _web(out, rng, t, customer, session, context, drop)
        else:
            platform = _pick(rng, _APP)
            context = {
                "country": country,
                "plan": plan,
                "platform": platform,
                "app_version": _pick(rng, _VERSIONS),
            }
            bought = _app(out, rng, t, customer, session, context, drop)
        support = {"country": country, "plan": plan, "medium": _pick(rng, _MEDIA)}
        if bought is not None and rng.random() < 0.3:
            _ticket(out, rng, bought + 60 + rng.random() * 900, customer, support)
        elif rng.random() < 0.1:
            _ticket(out, rng, t + rng.random() * 600, customer, support)
    out.events.sort()
    with path.open("w") as handle:
        for _, _, event in out.events:
            handle.write(json.dumps(event) + "\n")
    return len(out.events)


def _web(
    out: _Writer,
    rng: random.Random,
    t: float,
    customer: str,
    session: str,
    context: dict[str, str],
    drop: Drop | None,
) -> float | None:
    """A visit: pages with vitals, maybe a click, maybe a purchase; returns its time."""
    pages = 1 + int(rng.expovariate(0.6))
    at = t
    for i in range(pages):
        out.emit(at, "web", "page_view", customer, session, context, {"path": f"/p/{i}"})
        if rng.random() < 0.35:
            for name, (median, spread) in _VITALS.items():
                value = round(median * math.exp(rng.gauss(0.0, spread)), 3)
                vital = {"name": name, "value": value}
                out.emit(at + 1.5, "web", "web_vital", customer, session, context, vital)
        if rng.random() < 0.015:
            out.emit(at + 2, "web", "error", customer, session, context, {"message": "boom"})
        at += 5 + rng.expovariate(1 / 25)
    decided = t + 8 + rng.expovariate(1 / 40)
    if not _decide(rng, 0.58, drop, "web", "consideration", context, decided):
        return None
    out.emit(decided, "web", "click", customer, session, context, {"target": "product"})
    bought = decided + 30 + rng.expovariate(1 / 120)
    if not _decide(rng, 0.3, drop, "web", "conversion", context, bought):
        return None
    out.emit(bought - 20, "web", "add_to_cart", customer, session, context, {"sku": "A-1"})
    order = {"order_id": f"o-{customer}", "revenue": 30.0, "currency": "USD"}
    out.emit(bought, "web", "purchase", customer, session, context, order)
    return bought


def _app(
    out: _Writer,
    rng: random.Random,
    t: float,
    customer: str,
    session: str,
    context: dict[str, str],
    drop: Drop | None,
) -> float | None:
    """An app session: screens, maybe a tap, a crash now and then, maybe a purchase."""
    out.emit(t, "app", "app_open", customer, session, context)
    at = t + 2
    for _ in range(1 + int(rng.expovariate(0.3))):
        out.emit(at, "app", "screen_view", customer, session, context, {"screen": "feed"})
        if rng.random() < 0.006:
            out.emit(at + 1, "app", "crash", customer, session, context, {"message": "SIGSEGV"})
            return None
        at += 3 + rng.expovariate(1 / 10)
    decided = t + 5 + rng.expovariate(1 / 30)
    if not _decide(rng, 0.72, drop, "app", "consideration", context, decided):
        return None
    out.emit(decided, "app", "tap", customer, session, context)
    bought = decided + 20 + rng.expovariate(1 / 90)
    if not _decide(rng, 0.33, drop, "app", "conversion", context, bought):
        return None
    order = {"order_id": f"o-{customer}", "revenue": 20.0, "currency": "EUR"}
    out.emit(bought, "app", "purchase", customer, session, context, order)
    return bought


def _ticket(
    out: _Writer, rng: random.Random, t: float, customer: str, context: dict[str, str]
) -> None:
    """A ticket with a first reply, a resolution and some of the three surveys."""
    ticket = {"ticket_id": f"t-{customer}"}
    session = f"{customer}-support"
    out.emit(t, "support", "ticket_opened", customer, session, context, ticket)
    if rng.random() < 0.3:
        bot = {**ticket, "is_bot": True}
        out.emit(t + 3, "support", "agent_reply", customer, session, context, bot)
    replied = t + 200 * math.exp(rng.gauss(0.0, 0.8))
    human = {**ticket, "is_bot": False}
    out.emit(replied, "support", "agent_reply", customer, session, context, human)
    resolved = replied + 700 * math.exp(rng.gauss(0.0, 0.7))
    out.emit(resolved, "support", "ticket_resolved", customer, session, context, ticket)
    for kind, chance, scores, weights in (
        ("csat", 0.6, range(1, 6), (4, 6, 12, 38, 40)),
        ("nps", 0.45, range(11), (2, 1, 2, 2, 3, 5, 6, 14, 20, 22, 23)),
        ("ces", 0.4, range(1, 8), (3, 4, 8, 15, 25, 25, 20)),
    ):
        if rng.random() < chance:
            score = rng.choices(list(scores), weights)[0]
            when = resolved + 30 + rng.random() * 300
            out.emit(
                when, "support", f"{kind}_submitted", customer, session, context, {"score": score}
            )
