"""The producer SDK: how a Python product service emits touchpoint events.

    async with Producer("kafka:9092", source="web") as xp:
        await xp.send("purchase", customer_id="c-42", order_id="o-1", revenue=59.0, currency="EUR")

    with SyncProducer("kafka:9092", source="support") as xp:
        xp.send("ticket_opened", customer_id="c-42", ticket_id="T-7")

An event is built from keyword arguments and checked against the contract with
the worker's own check before it leaves the process, so a bad event fails at
the call site, where the bug is, instead of turning up later among the
rejected events. Events go one per message, keyed by identity like every
other producer, in batches whose acknowledgements are awaited together. A
batch Kafka did not acknowledge is sent again with the same bytes: a retry
can only repeat an event_id, and the worker keeps one copy of each.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self, TypeVar

import orjson
from aiokafka import AIOKafkaProducer

from pipeline.errors import XpError
from pipeline.ingest import key_and_received, producer
from pipeline.validate import MAX_PROPERTIES_DEPTH, Rejected, check

log = logging.getLogger("xp.producer")

T = TypeVar("T")


class InvalidEventError(XpError, ValueError):
    """The event breaks the contract; `reason` is the code the worker would store."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class DeliveryError(XpError):
    """Kafka did not acknowledge these events after every retry; sending them again is safe."""

    def __init__(self, event_ids: list[str], cause: BaseException | None) -> None:
        super().__init__(f"{len(event_ids)} events not delivered: {cause}")
        self.event_ids = event_ids


def build_event(
    type_: str,
    *,
    source: str,
    customer_id: str | None = None,
    anonymous_id: str | None = None,
    session_id: str | None = None,
    occurred_at: datetime | str | None = None,
    context: Mapping[str, str] | None = None,
    event_id: str | None = None,
    properties: Mapping[str, Any] | None = None,
    **more_properties: Any,
) -> dict[str, Any]:
    """A contract event (not yet checked); the event id and time default to new and now.

    Keyword arguments other than the envelope's are properties, so
    `build_event("page_view", source="web", anonymous_id="d-1", path="/")` is
    a page view of "/".
    """
    moment = datetime.now(UTC) if occurred_at is None else occurred_at
    event: dict[str, Any] = {
        "event_id": event_id or str(uuid.uuid4()),
        "schema_version": 1,
        "source": source,
        "type": type_,
        "occurred_at": (
            moment.isoformat(timespec="milliseconds") if isinstance(moment, datetime) else moment
        ),
    }
    optional = {
        "customer_id": customer_id,
        "anonymous_id": anonymous_id,
        "session_id": session_id,
        "context": dict(context) if context is not None else None,
        "properties": {**(properties or {}), **more_properties} or None,
    }
    event.update((name, value) for name, value in optional.items() if value is not None)
    return event


def _serialised(event: dict[str, Any]) -> bytes:
    """The event as JSON, or `InvalidEventError` when it cannot become JSON at all."""
    try:
        return orjson.dumps(event)
    except orjson.JSONEncodeError as exc:  # a TypeError, whatever the cause
        if str(exc) == "Recursion limit reached":
            detail = (
                "the event nests deeper than JSON serialisation allows (254 levels) or "
                f"contains itself; properties may nest {MAX_PROPERTIES_DEPTH} levels"
            )
        else:
            detail = f"the event cannot be serialised as JSON: {exc}"
        raise InvalidEventError("invalid_field", detail) from exc


@dataclass(frozen=True, slots=True)
class _Message:
    event_id: str
    raw: bytes
    key: bytes | None
    received_ms: int


class Producer:
    """Async client: `send` checks and queues, batches go out in the background.

    `send` returns once the event is queued; `flush` (and leaving the `async
    with` block) waits until Kafka acknowledged everything and raises
    `DeliveryError` with the ids of what it could not deliver. At most
    `max_buffered` events wait at once: past that, `send` waits too.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        source: str | None = None,
        topic: str = "touchpoints",
        batch_size: int = 500,
        linger_s: float = 0.05,
        max_buffered: int = 20_000,
        max_retries: int = 5,
        retry_backoff_s: float = 0.2,
    ) -> None:
        self.bootstrap = bootstrap
        self.source = source
        self.topic = topic
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.max_buffered = max_buffered
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self._kafka: AIOKafkaProducer | None = None
        self._batch: list[_Message] = []
        self._linger: asyncio.TimerHandle | None = None
        self._deliveries: dict[asyncio.Task[None], int] = {}
        self._failures: list[DeliveryError] = []

    async def start(self) -> None:
        self._kafka = producer(self.bootstrap)
        await self._kafka.start()

    async def stop(self) -> None:
        """Deliver what is queued, then disconnect; raises `DeliveryError` for what failed."""
        try:
            await self.flush()
        finally:
            if self._kafka is not None:
                await self._kafka.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def send(self, type_: str, /, *, source: str | None = None, **fields: Any) -> str:
        """Check and queue one event; returns its event_id.

        Takes the arguments of `build_event`; `source` defaults to the
        producer's. Raises `InvalidEventError` when the event breaks the contract.
        """
        if self._kafka is None:
            raise XpError("the producer is not started: use `async with Producer(...)`")
        event_source = source or self.source
        if event_source is None:
            raise InvalidEventError("missing_field", "no source: pass source= here or to Producer")
        event = build_event(type_, source=event_source, **fields)
        raw = _serialised(event)
        now_ms = int(time.time() * 1000)
        result = check(raw, now_ms)
        if isinstance(result, Rejected):
            raise InvalidEventError(result.reason, result.detail)
        key, _ = key_and_received(raw, now_ms)
        self._batch.append(_Message(result.event_id, raw, key, now_ms))
        if len(self._batch) >= self.batch_size:
            self._dispatch()
        elif self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(self.linger_s, self._dispatch)
        while self._deliveries and self._buffered() > self.max_buffered:
            await asyncio.wait(self._deliveries, return_when=asyncio.FIRST_COMPLETED)
        return result.event_id

    async def flush(self) -> None:
        """Wait until every queued event is acknowledged; raise for those that never were."""
        self._dispatch()
        if self._deliveries:
            await asyncio.wait(self._deliveries)
        failures, self._failures = self._failures, []
        if failures:
            ids = [event_id for failure in failures for event_id in failure.event_ids]
            raise DeliveryError(ids, failures[-1].__cause__)

    def _buffered(self) -> int:
        return len(self._batch) + sum(self._deliveries.values())

    def _dispatch(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        batch, self._batch = self._batch, []
        if batch:
            task = asyncio.ensure_future(self._deliver(batch))
            self._deliveries[task] = len(batch)
            task.add_done_callback(self._delivered)

    def _delivered(self, task: asyncio.Task[None]) -> None:
        del self._deliveries[task]
        error = None if task.cancelled() else task.exception()
        if isinstance(error, DeliveryError):
            self._failures.append(error)
        elif error is not None:
            log.error("delivering a batch failed unexpectedly", exc_info=error)

    async def _deliver(self, batch: list[_Message]) -> None:
        """Send a batch; resend what Kafka did not acknowledge, the same bytes each time."""
        todo = batch
        error: BaseException | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self.retry_backoff_s * 2 ** (attempt - 1))
            results = await asyncio.gather(*map(self._send_one, todo), return_exceptions=True)
            failed = [(m, r) for m, r in zip(todo, results, strict=True) if r is not None]
            if not failed:
                return
            todo = [message for message, _ in failed]
            error = failed[-1][1]
            if attempt < self.max_retries:
                log.warning(
                    "%d of %d events not acknowledged (%s); retry %d of %d",
                    len(failed),
                    len(results),
                    error,
                    attempt + 1,
                    self.max_retries,
                )
        raise DeliveryError([m.event_id for m in todo], error) from error

    async def _send_one(self, message: _Message) -> None:
        assert self._kafka is not None
        delivery = await self._kafka.send(
            self.topic, message.raw, key=message.key, timestamp_ms=message.received_ms
        )
        await delivery


class SyncProducer:
    """`Producer` for code without an event loop: it runs one of its own in a thread.

    `send` takes the arguments of `Producer.send` and returns once the
    event is queued; `flush` and `close` (or leaving the `with` block) wait for
    Kafka.
    """

    def __init__(self, bootstrap: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="xp-producer", daemon=True
        )
        self._thread.start()
        self._producer = Producer(bootstrap, **options)
        try:
            self._call(self._producer.start())
        except BaseException:
            self._close_loop()
            raise

    def send(self, type_: str, /, **fields: Any) -> str:
        return self._call(self._producer.send(type_, **fields))

    def flush(self) -> None:
        self._call(self._producer.flush())

    def close(self) -> None:
        try:
            self._call(self._producer.stop())
        finally:
            self._close_loop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
