"""`xp demo --via http`: the simulated shop posts its events to the collector.

The demo otherwise produces straight to Kafka; through here every event takes
the path of a real web page, app or helpdesk: an HTTP request with the API key
of its source, the collector's checks and its acks=all delivery. The feed posts
NDJSON batches per source and retries what the collector asks it to retry
(429 and 503), which is safe because every event carries its event_id.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiohttp
import orjson

from pipeline.collector import SOURCES, ApiKeys, Collector
from pipeline.config import Settings
from pipeline.errors import XpError
from pipeline.ingest import _aiter

#: Lines gathered before they are posted, or fewer once this many seconds passed.
ROUND_LINES = 600
ROUND_SECONDS = 0.2
#: Retries of one request the collector refused for now (429 or 503), each after its Retry-After.
MAX_RETRIES = 30


async def post_events(
    session: aiohttp.ClientSession, url: str, key: str, lines: list[bytes]
) -> dict[str, Any]:
    """POST one NDJSON batch; returns the collector's 202 answer."""
    body = b"\n".join(lines)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-ndjson"}
    for _ in range(MAX_RETRIES):
        async with session.post(f"{url}/v1/events", data=body, headers=headers) as response:
            if response.status == 202:
                answer: dict[str, Any] = await response.json()
                return answer
            if response.status not in (429, 503):
                raise XpError(f"the collector answered {response.status}: {await response.text()}")
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
    raise XpError(f"the collector refused a batch {MAX_RETRIES} times (429/503)")


async def via_collector(
    settings: Settings, bootstrap: str, lines: Iterable[bytes] | AsyncIterator[bytes]
) -> AsyncIterator[int]:
    """A `runner.Feed`: starts a collector on loopback and posts `lines` to it."""
    keys = {source: secrets.token_urlsafe(18) for source in SOURCES}
    collector = Collector(settings, bootstrap, ApiKeys(keys.items()))
    url = await collector.start("127.0.0.1", 0)
    sent = 0
    try:
        async with aiohttp.ClientSession() as session:
            async for batch in _rounds(lines):
                by_source: dict[str, list[bytes]] = defaultdict(list)
                for line in batch:
                    by_source[orjson.loads(line)["source"]].append(line)
                await asyncio.gather(
                    *(post_events(session, url, keys[s], part) for s, part in by_source.items())
                )
                sent += len(batch)
                yield sent
    finally:
        await collector.stop()


async def _rounds(lines: Iterable[bytes] | AsyncIterator[bytes]) -> AsyncIterator[list[bytes]]:
    batch: list[bytes] = []
    started = time.monotonic()
    async for line in _aiter(lines):
        if not batch:
            started = time.monotonic()
        batch.append(line)
        if len(batch) >= ROUND_LINES or time.monotonic() - started >= ROUND_SECONDS:
            yield batch
            batch = []
    if batch:
        yield batch
