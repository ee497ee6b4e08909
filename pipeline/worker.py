"""The stateful stage: a Faust app whose agent applies batches to partition state.

Per batch, in this order: apply it to the partition's state (pure), write the
rows to ClickHouse (retrying until it works, which also stops taking new
work), then write the batch's state delta to the changelog table as one
message. Faust commits the batch offset only after the producer flushed that
delta. A crash anywhere replays at most the batches whose delta is missing,
and those produce exactly the rows and state they produced before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP, EventT

from pipeline import observability as obs
from pipeline.bulk import BulkStage
from pipeline.clickhouse import Rows, Sink
from pipeline.config import Settings
from pipeline.processor import Outcome, PartitionState
from pipeline.topics import MAX_MESSAGE_BYTES

log = logging.getLogger("xp.worker")

_DUMP = orjson.OPT_NON_STR_KEYS
#: Journeys (or seen ids, windows) per snapshot chunk: keeps each changelog message small.
CHUNK_ITEMS = 5_000
_SINK_BACKOFF_MAX_S = 30.0


def _key(partition: int, *parts: object) -> bytes:
    return "/".join([f"p{partition}", *map(str, parts)]).encode()


def snapshot_chunks(snapshot: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Split a snapshot into deltas of at most CHUNK_ITEMS items each.

    Applying the chunks in order rebuilds the state, because every chunk carries
    the offsets and watermark and the rest is keyed data that only adds up.
    """
    base = {"a": snapshot["a"], "w": snapshot["w"], "gd": [], "sd": []}
    journeys = list(snapshot["j"].items())
    lists = {"g": snapshot["g"], "s": snapshot["s"], "l": snapshot["l"]}
    sizes = [len(journeys)] + [len(v) for v in lists.values()]
    count = max(1, *((n + CHUNK_ITEMS - 1) // CHUNK_ITEMS for n in sizes))
    for i in range(count):
        lo, hi = i * CHUNK_ITEMS, (i + 1) * CHUNK_ITEMS
        yield {
            **base,
            "j": dict(journeys[lo:hi]),
            **{name: items[lo:hi] for name, items in lists.items()},
        }


class Worker:
    """Bulk stage plus the Faust app, sharing one event loop and one ClickHouse sink."""

    def __init__(self, settings: Settings, bootstrap: str, sink: Sink) -> None:
        self.settings = settings
        self.sink = sink
        self.bulk = BulkStage(settings, bootstrap)
        self.counts: Counter[str] = Counter()
        self.processed: dict[int, int] = {}
        self.states: dict[int, PartitionState] = {}
        self._deltas: dict[int, list[bytes]] = {}
        self._snapshot_keys: dict[int, list[bytes]] = {}
        self._since_snapshot: Counter[int] = Counter()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xp-sink")
        self.app = faust.App(
            settings.app_id,
            broker=f"kafka://{bootstrap}",
            store="memory://",
            web_enabled=False,
            broker_session_timeout=6,
            broker_heartbeat_interval=1,
            broker_rebalance_timeout=4,
            topic_partitions=settings.partitions,
            consumer_auto_offset_reset="earliest",
            producer_max_request_size=MAX_MESSAGE_BYTES,
            consumer_max_fetch_size=MAX_MESSAGE_BYTES,
            producer_acks=-1,
            table_standby_replicas=0,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.batches = self.app.topic(
            settings.batches_topic, value_serializer="raw", key_serializer="raw"
        )
        self.dead_letters = self.app.topic(
            settings.rejected_topic, value_serializer="raw", key_serializer="raw"
        )
        self.table = self.app.Table(
            "xp-state",
            partitions=settings.partitions,
            key_type=bytes,
            value_type=bytes,
            extra_topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES)},
        )
        self.app.agent(self.batches, name="xp-process")(self._agent)
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self._bulk_task: asyncio.Task[None] | None = None
        # Reads the Faust group's committed offsets without joining the group.
        self._group_view = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=settings.app_id, enable_auto_commit=False
        )

    async def start(self) -> None:
        await self._group_view.start()
        await self.app.start()
        self._bulk_task = asyncio.create_task(self.bulk.run(), name="xp-bulk")

    async def stop(self) -> None:
        self.bulk.stop()
        if self._bulk_task is not None:
            await self._bulk_task
        await self.app.stop()
        await self._group_view.stop()
        self._executor.shutdown(wait=True)

    @property
    def accounted(self) -> int:
        return self.counts["stored"] + self.counts["duplicates"] + self.counts["rejected"]

    async def idle(self) -> bool:
        """True when every touchpoint is checked and every batch on Kafka is applied."""
        consumer = self.bulk.consumer
        if consumer is None or self._bulk_task is None or self._bulk_task.done():
            return False
        s = self.settings
        touch = [TopicPartition(s.touchpoints_topic, p) for p in range(s.partitions)]
        batch = [TopicPartition(s.batches_topic, p) for p in range(s.partitions)]
        ends = await consumer.end_offsets(touch + batch)
        for tp in touch:
            if ends[tp] and (await consumer.committed(tp) or 0) < ends[tp]:
                return False
        for tp in batch:
            applied = self.processed.get(tp.partition, 0)
            if applied < ends[tp] and (await self._group_view.committed(tp) or 0) < ends[tp]:
                return False
        return True

    def _on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """A revoked partition's state is rebuilt from the changelog if it comes back."""
        revoked: set[TP] = args[0]
        for tp in revoked:
            if tp.topic == self.settings.batches_topic:
                self.states.pop(tp.partition, None)

    async def _agent(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await self._handle(event)

    async def _handle(self, event: EventT[bytes]) -> None:
        partition = event.message.partition
        state = self.states.get(partition) or self._restore(partition)
        batch = orjson.loads(event.value)
        outcome = state.apply(batch, event.message.offset)
        await self._store(outcome.rows)
        for key, letter in outcome.dead_letters:
            await self.dead_letters.send(key=key, value=letter, partition=partition)
        delta_key = _key(partition, "d", f"{event.message.offset:020d}")
        self.table[delta_key] = orjson.dumps(outcome.delta, option=_DUMP)
        self._deltas.setdefault(partition, []).append(delta_key)
        self._since_snapshot[partition] += 1
        if self._since_snapshot[partition] >= self.settings.snapshot_every_batches:
            self._snapshot(partition, state, event.message.offset)
        self._count(outcome)
        self.processed[partition] = event.message.offset + 1

    def _count(self, outcome: Outcome) -> None:
        self.counts["stored"] += outcome.accepted
        self.counts["duplicates"] += outcome.duplicates
        self.counts["rejected"] += outcome.rejected
        self.counts["replayed"] += outcome.skipped
        obs.record_outcome(outcome)

    async def _store(self, rows: Rows) -> None:
        """Write rows, retrying with backoff: nothing moves on until ClickHouse has them."""
        loop = asyncio.get_running_loop()
        delay = 0.5
        while True:
            started = time.perf_counter()
            try:
                await loop.run_in_executor(self._executor, self.sink.write, rows)
            except Exception as exc:
                obs.SINK_ERRORS.inc()
                log.warning("ClickHouse write failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _SINK_BACKOFF_MAX_S)
                continue
            obs.SINK_SECONDS.observe(time.perf_counter() - started)
            obs.SINK_ROWS.observe(rows.count())
            return

    def _restore(self, partition: int) -> PartitionState:
        """Rebuild from the newest complete snapshot plus the deltas written after it."""
        s = self.settings
        state = PartitionState(partition, s.allowed_lateness_s, s.session_gap_s)
        prefix = _key(partition, "")
        meta = self.table.get(_key(partition, "snap"))
        snap_seq = -1
        chunk_keys: list[bytes] = []
        if meta is not None:
            info = orjson.loads(meta)
            snap_seq = info["seq"]
            chunk_keys = [_key(partition, "s", f"{snap_seq:020d}", i) for i in range(info["n"])]
            for key in chunk_keys:
                state.apply_delta(orjson.loads(self.table[key]))
        deltas = sorted(
            key
            for key in self.table
            if key.startswith(prefix + b"d/") and int(key.rsplit(b"/", 1)[1]) > snap_seq
        )
        for key in deltas:
            state.apply_delta(orjson.loads(self.table[key]))
        self._deltas[partition] = deltas
        self._snapshot_keys[partition] = chunk_keys
        self.states[partition] = state
        log.info(
            "partition %d restored: %d journeys, snapshot %d + %d deltas",
            partition,
            len(state.journeys),
            snap_seq,
            len(deltas),
        )
        return state

    def _snapshot(self, partition: int, state: PartitionState, seq: int) -> None:
        """Compact the changelog: chunks first, then the pointer, then drop what it covers.

        Changelog messages of one partition keep their order, so once the
        pointer is there its chunks are too.
        """
        keys = []
        for i, chunk in enumerate(snapshot_chunks(state.snapshot())):
            key = _key(partition, "s", f"{seq:020d}", i)
            self.table[key] = orjson.dumps(chunk, option=_DUMP)
            keys.append(key)
        self.table[_key(partition, "snap")] = orjson.dumps({"seq": seq, "n": len(keys)})
        for key in self._deltas.get(partition, []) + self._snapshot_keys.get(partition, []):
            del self.table[key]
        self._deltas[partition] = []
        self._snapshot_keys[partition] = keys
        self._since_snapshot[partition] = 0
