"""The HTTP collector: how web pages, apps and support tools put events on Kafka.

Browsers, phones and helpdesk webhooks cannot speak Kafka, so they POST here.
The collector is stateless and sits in front of the touchpoints topic: it
stamps `received_at` as the Kafka record timestamp, keys each event by identity
(the same way `xp ingest` does) and produces the raw bytes the worker
validates. It answers 202 only once Kafka acknowledged every event of the
request (acks=all), and 503 with `Retry-After` when Kafka is slow or down, so
a client never believes an event is safe when it is not; events a client
retries carry their `event_id`, and the worker drops the copies.

Malformed events are not refused: they go to Kafka like any other, so the
worker stores them as rejected events with their reason (nothing is lost), and
the 202 already lists them with that reason, because `pipeline.validate.check`
is the same check the worker runs. Only what is not an event at all (an
unreadable body, a wrong key, a request over a limit) is refused, before
anything reaches Kafka. docs/collector.md is the user-facing description.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import signal
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from pipeline.config import Settings
from pipeline.errors import ConfigurationError
from pipeline.ingest import key_and_received, producer
from pipeline.topics import ensure_topics
from pipeline.validate import Accepted, check
from schemas.events import TYPES_BY_SOURCE

log = logging.getLogger("xp.collector")

SOURCES: tuple[str, ...] = tuple(TYPES_BY_SOURCE)
NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/jsonlines",
        "application/x-jsonlines",
    }
)
# text/plain is what navigator.sendBeacon sends for a string; octet-stream is
# aiohttp's name for a request without a Content-Type.
JSON_TYPES = frozenset({"application/json", "text/plain", "application/octet-stream"})
#: Seconds a client should wait after a 503: long enough not to pile onto a struggling Kafka.
UNAVAILABLE_RETRY_AFTER_S = 2
#: A successful delivery this recent makes /readyz answer without asking Kafka.
_READY_FRESH_S = 5.0
_READY_PROBE_TIMEOUT_S = 2.0
_CORS_HEADERS = "Authorization, Content-Type, Content-Encoding, X-API-Key"

REQUESTS = Counter("xp_collector_requests_total", "HTTP requests answered", ["route", "status"])
EVENTS = Counter(
    "xp_collector_events_total", "Events handed to Kafka (and acknowledged)", ["source", "outcome"]
)
REJECTS = Counter(
    "xp_collector_rejects_total",
    "Events the collector already saw were malformed (stored as rejected events)",
    ["reason"],
)
LATENCY = Histogram(
    "xp_collector_request_seconds",
    "Time to answer a request, Kafka acknowledgement included",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PENDING = Gauge(
    "xp_collector_pending_events", "Events handed to the producer and not yet settled by Kafka"
)


class RequestError(Exception):
    """A request refused as a whole: nothing of it reached Kafka (except on 503)."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return _json(self.status, {"error": self.code, "message": self.message}, self.headers)


def _json(status: int, body: object, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _unauthorized() -> RequestError:
    # The same answer for a missing, unknown or malformed key: nothing to learn from it.
    return RequestError(401, "unauthorized", "a valid API key is required")


def _unavailable(reason: str) -> RequestError:
    return RequestError(
        503,
        "unavailable",
        f"{reason}; retry later with the same events",
        {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
    )


# --- API keys -----------------------------------------------------------------


class ApiKeys:
    """Which source each API key may send.

    Keys are held as SHA-256 digests, so that a lookup never compares the
    secret itself byte by byte, and so that a key never appears in a log or a
    repr by accident.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._sources: dict[bytes, str] = {}
        for source, key in pairs:
            digest = _digest(key)
            if self._sources.setdefault(digest, source) != source:
                raise ConfigurationError(
                    f"one API key is configured for both {self._sources[digest]} and {source}"
                )

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        """The keys of `XP_COLLECTOR_KEYS` and of the file `XP_COLLECTOR_KEYS_FILE`, together."""
        pairs = []
        if settings.collector_keys is not None:
            secret = settings.collector_keys.get_secret_value()
            pairs += parse_keys(secret, "XP_COLLECTOR_KEYS")
        path = settings.collector_keys_file
        if path is not None:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigurationError(f"cannot read the API key file {path}: {exc}") from exc
            pairs += parse_keys(text, str(path))
        return cls(pairs)

    def source_of(self, key: str) -> str | None:
        return self._sources.get(_digest(key))

    def __len__(self) -> int:
        return len(self._sources)


def parse_keys(text: str, origin: str) -> list[tuple[str, str]]:
    """`source:key` entries separated by commas or newlines; `#` starts a comment line."""
    pairs = []
    entries = (
        entry.strip()
        for line in text.splitlines()
        if not line.strip().startswith("#")
        for entry in line.split(",")
    )
    for number, entry in enumerate((e for e in entries if e), 1):
        source, colon, key = entry.partition(":")
        if not colon or source.strip() not in SOURCES or not key.strip():
            # Never echo the entry: it may be a bare key.
            raise ConfigurationError(
                f"{origin}: entry {number} is not source:key with a source of {', '.join(SOURCES)}"
            )
        pairs.append((source.strip(), key.strip()))
    return pairs


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def presented_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The key of a request: `Authorization: Bearer`, `X-API-Key`, or `?api_key=`.

    The query parameter exists for `navigator.sendBeacon`, which cannot set
    headers; a browser key is public anyway, since every page carries it.
    """
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("X-API-Key") or query.get("api_key") or None


# --- rate limit ---------------------------------------------------------------


class RateLimiter:
    """A token bucket per API key: `rate` events per second, bursts up to `burst` events.

    Counted in events rather than requests, because one request may carry a
    thousand events and what a key costs the pipeline is its events.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, cost: int) -> float:
        """Take `cost` tokens: 0.0 when allowed, else the seconds until they would be there.

        A refused request takes nothing, so a client that waits as told gets in.
        """
        now = self._clock()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= cost:
            self._buckets[key] = (tokens - cost, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (cost - tokens) / self.rate


# --- bodies -------------------------------------------------------------------


def decode_body(body: bytes, encoding: str, limit: int) -> bytes:
    """The body without its Content-Encoding, refused once it inflates past `limit` bytes.

    The limit applies after inflating too: a few kilobytes of gzip can hold
    gigabytes of zeros.
    """
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise RequestError(
            415,
            "unsupported_encoding",
            f"Content-Encoding {encoding!r} is not supported: send gzip or no encoding",
        )
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise RequestError(400, "invalid_gzip", f"the body is not valid gzip ({exc})") from exc
    if len(inflated) > limit:
        raise RequestError(413, "body_too_large", f"the body inflates to more than {limit:,} bytes")
    if not inflater.eof or inflater.unused_data:
        raise RequestError(400, "invalid_gzip", "the gzip stream is truncated or has trailing data")
    return inflated


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(
            400,
            "invalid_json",
            f"the body is not valid JSON ({exc}); "
            "for one event per line send Content-Type: application/x-ndjson",
        ) from exc


def split_events(body: bytes, content_type: str) -> list[bytes]:
    """The raw bytes of each event of a body: one event, a JSON array, or NDJSON.

    NDJSON lines and a single event are kept byte for byte. Array elements are
    serialised again, since a JSON parser does not say where each one began.
    An NDJSON line that is not JSON is still an event, a malformed one, while
    a JSON body that does not parse is no event at all: its boundaries are lost.
    """
    if not body.strip():
        raise RequestError(
            400, "empty_body", "the body is empty: send an event, a JSON array of events or NDJSON"
        )
    if content_type in NDJSON_TYPES:
        lines = (line.rstrip(b"\r") for line in body.split(b"\n"))
        return [line for line in lines if line.strip()]
    if content_type not in JSON_TYPES:
        raise RequestError(
            415,
            "unsupported_media_type",
            f"Content-Type {content_type!r} is not supported: send application/json "
            "(an event or an array of events) or application/x-ndjson",
        )
    document = parse_json(body)
    if isinstance(document, dict):
        return [body]
    if isinstance(document, list):
        return [serialised(item) for item in document]
    raise RequestError(
        400, "not_events", "the body must be an event object or an array of event objects"
    )


def serialised(value: Any) -> bytes:
    """`orjson.dumps(value)` for any document `orjson.loads` returns, however deep.

    orjson parses 1,024 levels but serialises only 254: an array element or a
    webhook field nested deeper would fail the request with a 500. Such an
    event is serialised here instead, byte for byte as orjson would, so that it
    goes to Kafka like any other and the contract check gives it its reason
    (properties nested past 64 levels are `invalid_field`).
    """
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        pass
    out: list[bytes] = []
    # Iterative, as the nesting is deeper than Python's recursion limit: items are either
    # bytes to write as they are or values to serialise (parsed JSON holds no bytes).
    todo: list[Any] = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, bytes):
            out.append(item)
        elif isinstance(item, dict):
            # Pushed last member first: `{"a":` 1 `,"b":` 2 `}` comes off in order.
            todo.append(b"}")
            members = list(item.items())
            for n in range(len(members) - 1, -1, -1):
                key, child = members[n]
                todo.append(child)
                todo.append((b"," if n else b"{") + orjson.dumps(key) + b":")
            if not members:
                todo.append(b"{")
        elif isinstance(item, list):
            todo.append(b"]")
            for n in range(len(item) - 1, -1, -1):
                todo.append(item[n])
                todo.append(b"," if n else b"[")
            if not item:
                todo.append(b"[")
        else:
            out.append(orjson.dumps(item))
    return b"".join(out)


def _claimed_source(raw: bytes) -> object:
    """The `source` a malformed event names, if it is an object at all."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return document.get("source") if isinstance(document, dict) else None


# --- ticket webhooks ------------------------------------------------------------

_TICKET_TYPES: dict[str, str] = {
    "ticket.created": "ticket_opened",
    "ticket.comment_added": "agent_reply",
    "ticket.solved": "ticket_resolved",
    "ticket.reopened": "ticket_reopened",
    "ticket.satisfaction_rated": "csat_submitted",
}
_REPLY_ROLES = {"agent": False, "bot": True}
# Zendesk's classic satisfaction rating is good or bad; CSAT counts 4 and 5 as satisfied.
_RATINGS = {"good": 5, "bad": 1}
_WEBHOOK_NAMESPACE = uuid.UUID("0d9a4c53-6f2e-4c1b-9a57-3c8e2b7f41d6")


@dataclass(frozen=True)
class Ignored:
    """A webhook that is no touchpoint, acknowledged so that the sender does not retry it."""

    reason: str


def ticket_event(payload: object) -> dict[str, Any] | Ignored:
    """The support event of one ticket webhook (mapping in docs/collector.md), or why none.

    Missing or ill-typed fields are carried over as they are, so that the
    contract check names what is wrong and the event is stored as rejected.
    The event id derives from the webhook's own id: a redelivered webhook is
    a duplicate, not a second event.
    """
    if not isinstance(payload, dict):
        return Ignored("not a JSON object")
    kind = payload.get("type")
    type_ = _TICKET_TYPES.get(kind) if isinstance(kind, str) else None
    if type_ is None:
        return Ignored(f"webhook type {kind!r} has no support event")
    ticket = _object(payload.get("ticket"))
    properties: dict[str, Any] = {"ticket_id": _text_id(ticket.get("id"))}
    if type_ == "agent_reply":
        comment = _object(payload.get("comment"))
        role = _object(comment.get("author")).get("role")
        if role not in _REPLY_ROLES:
            return Ignored("a comment by the requester is no agent reply")
        if comment.get("public") is False:
            return Ignored("an internal note is no reply to the customer")
        properties["is_bot"] = _REPLY_ROLES[role]
    elif type_ == "csat_submitted":
        score = _object(payload.get("rating")).get("score")
        properties["score"] = _RATINGS.get(score, score) if isinstance(score, str) else score
    event: dict[str, Any] = {
        "event_id": _webhook_event_id(payload.get("id")),
        "source": "support",
        "type": type_,
        "occurred_at": payload.get("time"),
        "properties": properties,
    }
    requester = _object(ticket.get("requester"))
    if requester.get("external_id") is not None:
        event["customer_id"] = _text_id(requester["external_id"])
    elif requester.get("id") is not None:
        event["anonymous_id"] = f"ticket-requester:{_text_id(requester['id'])}"
    if isinstance(ticket.get("channel"), str):
        event["context"] = {"platform": ticket["channel"]}
    return event


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text_id(value: object) -> object:
    """Helpdesks number their tickets and users; the contract's ids are strings."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _webhook_event_id(value: object) -> str | None:
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(uuid.uuid5(_WEBHOOK_NAMESPACE, f"ticket-webhook:{value}"))
    return None


# --- the service ----------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Message = tuple[bytes, bytes | None]


class Collector:
    """The collector's HTTP service and its Kafka producer, started and stopped together."""

    def __init__(self, settings: Settings, bootstrap: str, keys: ApiKeys) -> None:
        if settings.collector_burst < settings.collector_max_events:
            raise ConfigurationError(
                f"XP_COLLECTOR_BURST ({settings.collector_burst}) must be at least "
                f"XP_COLLECTOR_MAX_EVENTS ({settings.collector_max_events}): a full request "
                "could never pass the rate limit"
            )
        self.settings = settings
        self.bootstrap = bootstrap
        self.keys = keys
        origins = (o.strip() for o in settings.collector_cors_origins.split(","))
        self.origins = frozenset(o for o in origins if o)
        self.limiter = RateLimiter(settings.collector_rate_per_key, settings.collector_burst)
        # The worker's own stateless checks with its limits, so the 202 tells what it will reject.
        self._check = functools.partial(
            check,
            max_event_bytes=settings.max_event_bytes,
            max_clock_skew_ms=settings.max_clock_skew_s * 1000,
        )
        self.pending = 0
        PENDING.set_function(lambda: self.pending)
        self._producer: AIOKafkaProducer | None = None
        self._runner: web.AppRunner | None = None
        self._draining = False
        self._kafka_ok = True
        self._kafka_ok_at = 0.0
        self.app = web.Application(middlewares=[self._middleware])
        self.app.router.add_post("/v1/events", self._events, name="events")
        self.app.router.add_post("/v1/webhooks/tickets", self._tickets, name="tickets")
        self.app.router.add_get("/healthz", self._healthz, name="healthz")
        self.app.router.add_get("/readyz", self._readyz, name="readyz")
        self.app.router.add_get("/metrics", self._metrics, name="metrics")

    async def start(self, host: str, port: int) -> str:
        """Connect to Kafka, then listen; returns the base URL."""
        self._producer = producer(self.bootstrap)
        await self._producer.start()
        self._kafka_ok_at = time.monotonic()
        # Bodies are inflated here, not by aiohttp, so that the size limit holds after gzip.
        self._runner = web.AppRunner(
            self.app, auto_decompress=False, access_log=None, shutdown_timeout=30.0
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        return f"http://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        """Stop listening, answer the requests in flight, then flush every accepted event."""
        self._draining = True
        if self._runner is not None:
            await self._runner.cleanup()
        if self._producer is not None:
            await self._producer.stop()
        log.info("collector stopped")

    # --- middleware: errors, CORS, metrics

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        route = request.match_info.route.name or "other"
        response: web.StreamResponse
        try:
            if request.method == "OPTIONS":
                response = self._preflight(request)
            else:
                response = await handler(request)
        except RequestError as exc:
            response = exc.response()
        except web.HTTPException as exc:
            response = _json(exc.status, {"error": exc.reason.lower().replace(" ", "_")})
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            response = _json(500, {"error": "internal", "message": "see the collector log"})
        origin = request.headers.get("Origin")
        if origin is not None and self._allows(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "Retry-After"
            response.headers["Vary"] = "Origin"
        REQUESTS.labels(route, str(response.status)).inc()
        LATENCY.labels(route).observe(time.perf_counter() - started)
        return response

    def _allows(self, origin: str) -> bool:
        return "*" in self.origins or origin in self.origins

    def _preflight(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin")
        if origin is not None and not self._allows(origin):
            raise RequestError(403, "forbidden", "this origin may not send events")
        return web.Response(
            status=204,
            headers={
                "Allow": "POST, OPTIONS",
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": _CORS_HEADERS,
                "Access-Control-Max-Age": "600",
            },
        )

    # --- routes

    async def _events(self, request: web.Request) -> web.Response:
        source, key_id = self._authenticate(request)
        body = await self._body(request)
        raws = split_events(body, request.content_type)
        return await self._ingest(source, key_id, list(enumerate(raws)), len(raws), {})

    async def _tickets(self, request: web.Request) -> web.Response:
        source, key_id = self._authenticate(request)
        if source != "support":
            raise RequestError(403, "forbidden", "ticket webhooks need a support key")
        document = parse_json(await self._body(request))
        payloads = document if isinstance(document, list) else [document]
        items: list[tuple[int, bytes]] = []
        ignored = []
        for index, payload in enumerate(payloads):
            event = ticket_event(payload)
            if isinstance(event, Ignored):
                ignored.append({"index": index, "reason": event.reason})
            else:
                items.append((index, serialised(event)))
        return await self._ingest(source, key_id, items, len(payloads), {"ignored": ignored})

    async def _healthz(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        """Ready when a new request could be accepted: not draining, not backlogged, Kafka up."""
        if self._draining:
            return _json(503, {"status": "draining"})
        if self.pending >= self.settings.collector_max_pending:
            return _json(503, {"status": "backlogged", "pending": self.pending})
        if not await self._kafka_reachable():
            return _json(503, {"status": "kafka unavailable"})
        return _json(200, {"status": "ready", "pending": self.pending})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # --- the steps of an ingest request

    def _authenticate(self, request: web.Request) -> tuple[str, str]:
        key = presented_key(request.headers, request.query)
        source = self.keys.source_of(key) if key else None
        if key is None or source is None:
            raise _unauthorized()
        return source, _digest(key).hex()

    async def _body(self, request: web.Request) -> bytes:
        limit = self.settings.collector_max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise RequestError(
                413,
                "body_too_large",
                f"the body is {request.content_length:,} bytes, more than {limit:,}",
            )
        body = bytearray()
        async for chunk in request.content.iter_any():
            body += chunk
            if len(body) > limit:
                raise RequestError(413, "body_too_large", f"the body is more than {limit:,} bytes")
        return decode_body(bytes(body), request.headers.get("Content-Encoding", ""), limit)

    async def _ingest(
        self,
        source: str,
        key_id: str,
        items: list[tuple[int, bytes]],
        documents: int,
        extra: dict[str, Any],
    ) -> web.Response:
        """Limits, checks and delivery of the events of one request: all of them or none."""
        limit = self.settings.collector_max_events
        if documents > limit:
            raise RequestError(
                413, "too_many_events", f"{documents:,} events in one request, more than {limit:,}"
            )
        wait = self.limiter.take(key_id, max(1, documents))
        if wait:
            raise RequestError(
                429,
                "rate_limited",
                "this key is over its rate limit",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        received_ms = int(time.time() * 1000)
        messages: list[Message] = []
        errors = []
        accepted = 0
        for index, raw in items:
            result = self._check(raw, received_ms)
            if isinstance(result, Accepted):
                claimed: object = result.source
                accepted += 1
            else:
                claimed = _claimed_source(raw)
                errors.append({"index": index, "reason": result.reason, "detail": result.detail})
            if isinstance(claimed, str) and claimed != source:
                raise RequestError(
                    403, "forbidden", f"event {index} has a source this key may not send"
                )
            messages.append((raw, key_and_received(raw, received_ms)[0]))
        if messages:
            await self._deliver(messages, received_ms)
        EVENTS.labels(source, "accepted").inc(accepted)
        EVENTS.labels(source, "rejected").inc(len(errors))
        for error in errors:
            REJECTS.labels(error["reason"]).inc()
        body = {"received": len(items), "accepted": accepted, "rejected": len(errors)}
        return _json(202, {**body, **extra, "errors": errors})

    # --- Kafka

    async def _deliver(self, messages: list[Message], received_ms: int) -> None:
        """Hand every message to Kafka and wait for acks=all, within the timeout.

        Raises a 503 otherwise. The events of a refused request may still reach
        Kafka afterwards; the client sends them again and the worker drops the
        copies by event_id (malformed ones are then stored as rejected twice).
        Events stay counted as pending until Kafka settles them, so an outage
        fills the pending limit and further requests are refused at once instead
        of queueing in memory.
        """
        if self._draining:
            raise _unavailable("the collector is shutting down")
        if self.pending + len(messages) > self.settings.collector_max_pending:
            raise _unavailable("too many events are waiting for Kafka")
        self.pending += len(messages)
        handed: list[asyncio.Future[Any]] = []
        timeout = self.settings.collector_timeout_s
        deadline = time.monotonic() + timeout
        hand_over = asyncio.ensure_future(self._hand_over(messages, received_ms, handed))
        try:
            await asyncio.wait([hand_over], timeout=timeout)
            if not hand_over.done():
                hand_over.cancel()
                await asyncio.gather(hand_over, return_exceptions=True)
        finally:
            self.pending -= len(messages) - len(handed)
            delivery = self._track(handed)
        if hand_over.cancelled() or hand_over.exception() is not None:
            self._kafka_failed("Kafka did not take the events in time")
            raise _unavailable("Kafka is not taking events")
        await asyncio.wait([delivery], timeout=max(0.0, deadline - time.monotonic()))
        if not delivery.done():
            self._kafka_failed("Kafka did not acknowledge events in time")
            raise _unavailable("Kafka did not acknowledge the events")
        if any(isinstance(r, BaseException) for r in delivery.result()):
            raise _unavailable("Kafka did not acknowledge the events")

    async def _hand_over(
        self, messages: list[Message], received_ms: int, handed: list[asyncio.Future[Any]]
    ) -> None:
        assert self._producer is not None
        topic = self.settings.touchpoints_topic
        for raw, key in messages:
            handed.append(await self._producer.send(topic, raw, key=key, timestamp_ms=received_ms))

    def _track(self, handed: list[asyncio.Future[Any]]) -> asyncio.Future[list[Any]]:
        """One future for a request's deliveries; it takes them off the pending count.

        Never cancelled: that would cancel the deliveries themselves.
        """
        delivery = asyncio.gather(*handed, return_exceptions=True)
        if handed:
            delivery.add_done_callback(functools.partial(self._settled, len(handed)))
        return delivery

    def _settled(self, count: int, delivery: asyncio.Future[list[Any]]) -> None:
        self.pending -= count
        error = next((r for r in delivery.result() if isinstance(r, BaseException)), None)
        if error is None:
            self._kafka_ok_at = time.monotonic()
            if not self._kafka_ok:
                self._kafka_ok = True
                log.info("Kafka acknowledges events again")
        else:
            self._kafka_failed(f"delivery failed: {error}")

    def _kafka_failed(self, reason: str) -> None:
        if self._kafka_ok:
            self._kafka_ok = False
            log.warning("%s: answering 503 until Kafka recovers", reason)

    async def _kafka_reachable(self) -> bool:
        """Recent acknowledgements say so; otherwise ask Kafka for its metadata."""
        if self._kafka_ok and time.monotonic() - self._kafka_ok_at < _READY_FRESH_S:
            return True
        if self._producer is None:
            return False
        try:
            await asyncio.wait_for(
                self._producer.client.fetch_all_metadata(), _READY_PROBE_TIMEOUT_S
            )
        except (KafkaError, TimeoutError):
            return False
        return True


async def until_stopped() -> None:
    """Return on the first SIGTERM or SIGINT (Ctrl-C).

    The handlers are removed on return, so a second Ctrl-C interrupts a
    shutdown that takes too long instead of being swallowed.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def run_collector(settings: Settings, host: str, port: int) -> None:
    """`xp collect`: the collector alone, in front of a running Kafka."""
    if not settings.kafka_bootstrap:
        raise ConfigurationError(
            "xp collect sends to a running Kafka: set XP_KAFKA_BOOTSTRAP "
            "(for a local stack with a collector use `xp serve`)"
        )
    keys = ApiKeys.from_settings(settings)
    if not keys:
        raise ConfigurationError(
            "no API keys: set XP_COLLECTOR_KEYS (web:KEY,app:KEY,support:KEY) "
            "or XP_COLLECTOR_KEYS_FILE"
        )
    await ensure_topics(settings.kafka_bootstrap, settings)
    collector = Collector(settings, settings.kafka_bootstrap, keys)
    url = await collector.start(host, port)
    log.warning("collector on %s, producing to %s", url, settings.kafka_bootstrap)
    try:
        await until_stopped()
    finally:
        await collector.stop()
