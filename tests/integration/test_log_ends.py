"""`LogEnds` finds the offset after each partition's last record on the embedded broker.

The broker lists a partition's end as the base offset of its last record batch plus
one (pipeline/offsets.py), so only a partition whose last batch holds several records
tells a right answer from the listed one: the cases below are built of such batches.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.embedded import broker
from pipeline.offsets import LogEnds
from pipeline.topics import MAX_MESSAGE_BYTES

pytestmark = pytest.mark.integration

TOPIC = "log-ends"


async def _batch(producer: AIOKafkaProducer, partition: int, records: int) -> None:
    """`records` records in one record batch: one produce request."""
    batch = producer.create_batch()
    for i in range(records):
        assert batch.append(key=None, value=b"%d" % i, timestamp=None) is not None
    await (await producer.send_batch(batch, TOPIC, partition=partition))


async def _check(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, 3, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    ends = LogEnds(bootstrap, fetch_max_wait_ms=50)
    await producer.start()
    await ends.start()
    tps = [TopicPartition(TOPIC, p) for p in range(3)]
    try:
        await _batch(producer, 0, 5)
        await _batch(producer, 0, 5)
        await _batch(producer, 1, 1)
        assert await ends.of(tps) == dict(zip(tps, (10, 1, 0), strict=True))

        # Asked again, after more records: nothing is kept from the last answer.
        await _batch(producer, 1, 1)
        await _batch(producer, 2, 3)
        assert await ends.of(tps) == dict(zip(tps, (10, 2, 3), strict=True))
        # Concurrent questions take turns on the one reader.
        both = await asyncio.gather(ends.of(tps[:1]), ends.of(tps[2:]))
        assert both == [{tps[0]: 10}, {tps[2]: 3}]
    finally:
        await ends.stop()
        await producer.stop()


def test_log_ends_count_every_record_of_the_last_batch(tmp_path: Path) -> None:
    with broker(tmp_path / "broker") as bootstrap:
        asyncio.run(_check(bootstrap))


async def _stop_after_large_records(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(TOPIC, 4, 1, topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES)})]
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=MAX_MESSAGE_BYTES)
    await producer.start()
    try:
        # Two multi-megabyte records per partition, batched: the high watermark's
        # fetch is still bringing megabytes when the question has its answer.
        for i in range(8):
            await producer.send(TOPIC, b"x" * 3_000_000, partition=i % 4)
        await producer.flush()
    finally:
        await producer.stop()
    tps = [TopicPartition(TOPIC, p) for p in range(4)]
    for _ in range(5):
        ends = LogEnds(bootstrap, fetch_max_wait_ms=100)
        await ends.start()
        assert await ends.of(tps) == dict.fromkeys(tps, 2)
        stopping = asyncio.create_task(ends.stop())
        # Not `wait_for`: its cancellation would unstick a stuck stop and hide it.
        done, _ = await asyncio.wait({stopping}, timeout=15)
        if not done:
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping
            pytest.fail("LogEnds.stop() did not return within 15 s of a question")


def test_log_ends_stop_right_after_a_question_about_large_records(tmp_path: Path) -> None:
    """`xp bench --workers 2` waited forever here: aiokafka lost the stop's cancellation."""
    with broker(tmp_path / "broker") as bootstrap:
        asyncio.run(_stop_after_large_records(bootstrap))
