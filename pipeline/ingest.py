"""Putting raw events on the touchpoints topic: files (`xp ingest`, `xp process`) and the demo.

Each event goes as its own message, raw bytes unchanged, keyed by identity so
that one customer's events keep their order. The record timestamp is the
event's `received_at`: the moment an xp edge first received it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from pipeline.topics import MAX_MESSAGE_BYTES
from pipeline.validate import timestamp_ms


def key_and_received(raw: bytes, now_ms: int) -> tuple[bytes | None, int]:
    """Identity key and receive time of a raw line; malformed lines get none and now.

    A line that carries `received_at` was stamped by an xp edge before (it is a
    backfill), so that time is kept; see docs/semantics.md §1.
    """
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, now_ms
    if not isinstance(doc, dict):
        return None, now_ms
    identity = doc.get("customer_id") or doc.get("anonymous_id")
    key = identity.encode() if isinstance(identity, str) else None
    received = timestamp_ms(doc.get("received_at"))
    return key, now_ms if received is None else received


def file_lines(path: Path) -> Iterator[bytes]:
    """Every line but blank ones; a line's trailing newline is not part of the event."""
    with path.open("rb") as handle:
        for line in handle:
            stripped = line.rstrip(b"\r\n")
            if stripped.strip():
                yield stripped


def producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
        max_request_size=MAX_MESSAGE_BYTES,
    )


async def produce(
    bootstrap: str, topic: str, lines: Iterable[bytes] | AsyncIterator[bytes]
) -> AsyncIterator[int]:
    """Produce every line; yields the running count so callers can show progress."""
    kafka = producer(bootstrap)
    await kafka.start()
    sent = 0
    try:
        pending = []
        async for raw in _aiter(lines):
            key, received = key_and_received(raw, int(time.time() * 1000))
            pending.append(await kafka.send(topic, raw, key=key, timestamp_ms=received))
            sent += 1
            if len(pending) >= 5_000:
                for fut in pending:
                    await fut
                pending.clear()
                yield sent
        for fut in pending:
            await fut
        yield sent
    finally:
        await kafka.stop()


async def paced(lines: Iterable[bytes], rate: float) -> AsyncIterator[bytes]:
    """Hand out lines at `rate` per second (0: as fast as the consumer takes them)."""
    started = time.monotonic()
    for i, line in enumerate(lines):
        if rate and i % 100 == 0:
            ahead = i / rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        elif i % 1000 == 0:
            await asyncio.sleep(0)
        yield line


async def _aiter(lines: Iterable[bytes] | AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if isinstance(lines, AsyncIterator):
        async for line in lines:
            yield line
    else:
        for line in lines:
            yield line
