"""The collector and the producer SDK against the real embedded broker.

What reached Kafka is read back from the topic itself, so every assertion is
about what the worker would see: the bytes, the identity key and the record
timestamp. ClickHouse is left to tests/integration/test_collector_serve.py.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from pipeline.collector import ApiKeys, Collector
from pipeline.config import Settings
from pipeline.embedded import broker
from pipeline.httpfeed import post_events
from pipeline.producer import DeliveryError, InvalidEventError, Producer, SyncProducer, _Message
from pipeline.topics import ensure_topics

pytestmark = pytest.mark.integration

KEY = "web-test-key"


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    pid: int


@pytest.fixture(scope="module")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with broker(tmp_path_factory.mktemp("broker")) as bootstrap:
        yield Broker(bootstrap, _broker_pid(bootstrap))


def _broker_pid(bootstrap: str) -> int:
    """The broker child of this process listening on `bootstrap`, found through /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid() and f"tcp://{bootstrap}" in cmdline:
            return int(entry.name)
    raise AssertionError(f"no broker process for {bootstrap}")


def settings_for(kafka_broker: Broker, **overrides: Any) -> Settings:
    """Settings with a topic of the test's own, so that tests never see each other's events."""
    topic = f"touchpoints-{uuid.uuid4().hex[:8]}"
    return Settings(kafka_bootstrap=kafka_broker.bootstrap, touchpoints_topic=topic, **overrides)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def started(settings: Settings) -> tuple[Collector, str]:
    assert settings.kafka_bootstrap is not None
    await ensure_topics(settings.kafka_bootstrap, settings)
    collector = Collector(settings, settings.kafka_bootstrap, ApiKeys([("web", KEY)]))
    return collector, await collector.start("127.0.0.1", 0)


def page_views(count: int, prefix: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "event_id": str(uuid.uuid4()),
            "source": "web",
            "type": "page_view",
            "occurred_at": now,
            "anonymous_id": f"{prefix}-{i % 7}",
            "properties": {"path": f"/{i}"},
        }
        for i in range(count)
    ]


async def post(
    session: aiohttp.ClientSession, url: str, events: list[dict[str, Any]]
) -> tuple[int, dict[str, str], dict[str, Any]]:
    async with session.post(
        f"{url}/v1/events",
        data=orjson.dumps(events),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    ) as response:
        return response.status, dict(response.headers), await response.json()


async def read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` up to its current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(Settings().partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord[bytes, bytes]] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def ids_of(records: list[ConsumerRecord[bytes, bytes]]) -> list[str]:
    return [orjson.loads(r.value)["event_id"] for r in records]


async def test_acknowledged_events_are_on_kafka_keyed_and_stamped(
    kafka_broker: Broker, session: aiohttp.ClientSession
) -> None:
    settings = settings_for(kafka_broker)
    collector, url = await started(settings)
    try:
        events = page_views(30, "keyed")
        before = int(time.time() * 1000)
        status, _, answer = await post(session, url, events)
        after = int(time.time() * 1000)
    finally:
        await collector.stop()
    assert (status, answer["accepted"]) == (202, 30)
    records = await read_topic(kafka_broker.bootstrap, settings.touchpoints_topic)
    assert sorted(ids_of(records)) == sorted(e["event_id"] for e in events)
    by_id = {e["event_id"]: e for e in events}
    stamps = {r.timestamp for r in records}
    assert len(stamps) == 1 and before <= stamps.pop() <= after  # one received_at per request
    for record in records:
        sent = by_id[orjson.loads(record.value)["event_id"]]
        assert record.key == sent["anonymous_id"].encode()
        assert orjson.loads(record.value) == sent


async def test_over_the_rate_limit_gets_429_and_nothing_reaches_kafka(
    kafka_broker: Broker, session: aiohttp.ClientSession
) -> None:
    settings = settings_for(
        kafka_broker, collector_rate_per_key=10.0, collector_burst=100, collector_max_events=100
    )
    collector, url = await started(settings)
    try:
        allowed = page_views(100, "limited")
        refused = page_views(50, "limited")
        status, _, _ = await post(session, url, allowed)
        assert status == 202
        status, headers, answer = await post(session, url, refused)
    finally:
        await collector.stop()
    assert (status, answer["error"]) == (429, "rate_limited")
    assert 1 <= int(headers["Retry-After"]) <= 5
    records = await read_topic(kafka_broker.bootstrap, settings.touchpoints_topic)
    assert sorted(ids_of(records)) == sorted(e["event_id"] for e in allowed)


async def test_a_stopped_broker_gets_503_and_no_acknowledged_event_is_lost(
    kafka_broker: Broker, session: aiohttp.ClientSession
) -> None:
    settings = settings_for(kafka_broker, collector_timeout_s=1.5, collector_max_pending=60)
    collector, url = await started(settings)
    before, during, queued = page_views(50, "a"), page_views(50, "b"), page_views(50, "c")
    try:
        status, _, _ = await post(session, url, before)
        assert status == 202
        os.kill(kafka_broker.pid, signal.SIGSTOP)
        try:
            status, headers, answer = await post(session, url, during)
            assert (status, headers["Retry-After"]) == (503, "2"), answer
            # The 50 events above still wait for Kafka: 50 more would pass the
            # pending limit of 60, so they are refused at once, not queued.
            started_at = time.monotonic()
            status, _, answer = await post(session, url, queued)
            assert status == 503 and time.monotonic() - started_at < 1.0, answer
            assert "waiting for Kafka" in answer["message"]
            async with session.get(f"{url}/readyz") as response:
                assert response.status == 503
        finally:
            os.kill(kafka_broker.pid, signal.SIGCONT)
        # A client retries what got 503, with the same events (and event ids).
        for events in (during, queued):
            lines = [orjson.dumps(e) for e in events]
            assert (await post_events(session, url, KEY, lines))["accepted"] == 50
        async with session.get(f"{url}/readyz") as response:
            assert response.status == 200
    finally:
        await collector.stop()
    records = await read_topic(kafka_broker.bootstrap, settings.touchpoints_topic)
    stored = ids_of(records)
    # Acknowledged events are there exactly once; a retried batch may be there twice
    # (its first attempt reached Kafka after the 503), which the worker deduplicates.
    assert all(stored.count(e["event_id"]) == 1 for e in before + queued)
    assert set(stored) == {e["event_id"] for e in before + during + queued}


async def test_the_sdk_sends_checked_events_keyed_by_identity(kafka_broker: Broker) -> None:
    settings = settings_for(kafka_broker)
    assert settings.kafka_bootstrap is not None
    await ensure_topics(settings.kafka_bootstrap, settings)
    topic = settings.touchpoints_topic
    async with Producer(
        settings.kafka_bootstrap, source="web", topic=topic, batch_size=7, linger_s=0.01
    ) as xp:
        ids = [
            await xp.send("page_view", anonymous_id=f"d-{i % 3}", path=f"/{i}") for i in range(20)
        ]
        ids.append(
            await xp.send(
                "purchase",
                customer_id="c-1",
                properties={"order_id": "o-1", "currency": "EUR"},
                revenue=12.5,
            )
        )
        with pytest.raises(InvalidEventError) as caught:
            await xp.send("purchase", customer_id="c-1", order_id="o-2")
        assert caught.value.reason == "invalid_field"
        with pytest.raises(InvalidEventError, match="unknown_type"):
            await xp.send("ticket_opened", customer_id="c-1", ticket_id="t")
    with SyncProducer(settings.kafka_bootstrap, source="support", topic=topic) as sync:
        ids.append(sync.send("ticket_opened", customer_id="c-2", ticket_id="T-7"))
    records = await read_topic(settings.kafka_bootstrap, topic)
    assert sorted(ids_of(records)) == sorted(ids)
    for record in records:
        event = orjson.loads(record.value)
        assert record.key == (event.get("customer_id") or event["anonymous_id"]).encode()
    purchase = next(orjson.loads(r.value) for r in records if r.key == b"c-1")
    assert purchase["properties"] == {"order_id": "o-1", "currency": "EUR", "revenue": 12.5}


async def test_the_sdk_retries_with_the_same_bytes_and_reports_what_never_went(
    kafka_broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(kafka_broker)
    assert settings.kafka_bootstrap is not None
    await ensure_topics(settings.kafka_bootstrap, settings)
    real_send = Producer._send_one
    attempts: dict[str, int] = {}

    async def flaky(self: Producer, message: _Message) -> None:
        # Every event fails its first attempt; "never" events fail every attempt.
        attempts[message.event_id] = attempts.get(message.event_id, 0) + 1
        if attempts[message.event_id] == 1 or b'"never"' in message.raw:
            raise ConnectionError("lost the broker")
        await real_send(self, message)

    monkeypatch.setattr(Producer, "_send_one", flaky)
    xp = Producer(
        settings.kafka_bootstrap,
        source="web",
        topic=settings.touchpoints_topic,
        max_retries=2,
        retry_backoff_s=0.01,
    )
    await xp.start()
    sent = [await xp.send("click", anonymous_id="d-1", target=f"t{i}") for i in range(5)]
    lost = await xp.send("click", anonymous_id="d-1", target="never")
    with pytest.raises(DeliveryError) as caught:
        await xp.stop()
    assert caught.value.event_ids == [lost]
    records = await read_topic(settings.kafka_bootstrap, settings.touchpoints_topic)
    assert sorted(ids_of(records)) == sorted(sent)  # each once, with its first event_id
    assert attempts[lost] == 3 and all(attempts[i] == 2 for i in sent)
