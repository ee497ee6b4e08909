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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP, EventT

from pipeline import observability as obs
from pipeline.bulk import BulkProcesses, bulk_group
from pipeline.clickhouse import Rows, Sink
from pipeline.config import Settings
from pipeline.errors import XpError
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


@dataclass(slots=True)
class _Pending:
    """A batch applied to its partition's state whose rows are not stored yet."""

    stream: faust.StreamT[bytes]
    event: EventT[bytes]
    partition: int
    state: PartitionState
    outcome: Outcome


def latest_partials(rows: Rows) -> Rows:
    """Keep only the newest partial row per window and partition.

    Several batches of one flush often restate the same window; older versions
    would be replaced in ClickHouse anyway, so they need not be sent.
    """
    for name in ("stage_partials", "experience_partials"):
        newest: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for row in getattr(rows, name):
            newest[(*row[:3], row[-2])] = row
        setattr(rows, name, list(newest.values()))
    return rows


class Worker:
    """Bulk stage plus the Faust app, sharing one event loop and one ClickHouse sink."""

    def __init__(self, settings: Settings, bootstrap: str, sink: Sink) -> None:
        self.settings = settings
        self.sink = sink
        self.bulk = BulkProcesses(settings, bootstrap)
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
        self._pending: list[_Pending] = []
        self._pending_rows = 0
        self._pending_since = 0.0
        self._flushing: asyncio.Task[None] | None = None
        self._timer: asyncio.Task[None] | None = None
        # Read each group's committed offsets without joining the group.
        self._group_view = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=settings.app_id, enable_auto_commit=False
        )
        self._bulk_view = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=bulk_group(settings), enable_auto_commit=False
        )

    async def start(self) -> None:
        await self._group_view.start()
        await self._bulk_view.start()
        await self.app.start()
        self.bulk.start()
        self._timer = asyncio.create_task(self._flush_timer(), name="xp-flush-timer")

    async def stop(self) -> None:
        """Stop taking input, store what was applied, then leave the group."""
        await asyncio.get_running_loop().run_in_executor(None, self.bulk.stop)
        if self._timer is not None:
            self._timer.cancel()
        await self._flushed()
        if self._pending:
            self._start_flush()
            await self._flushed()
        await self.app.stop()
        await self._group_view.stop()
        await self._bulk_view.stop()
        self._executor.shutdown(wait=True)

    @property
    def accounted(self) -> int:
        return self.counts["stored"] + self.counts["duplicates"] + self.counts["rejected"]

    async def idle(self) -> bool:
        """True when every touchpoint is checked and every batch on Kafka is applied."""
        self.check_health()
        consumer = self._bulk_view
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

    def check_health(self) -> None:
        """Raise when a part of the worker died, so the process exits instead of hanging."""
        failure = self.bulk.failure()
        if failure is not None:
            raise XpError(failure)
        if self._flushing is not None and self._flushing.done():
            self._flushing.result()

    def _on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """A revoked partition's state is rebuilt from the changelog if it comes back."""
        revoked: set[TP] = args[0]
        for tp in revoked:
            if tp.topic == self.settings.batches_topic:
                self.states.pop(tp.partition, None)

    async def _agent(self, stream: faust.StreamT[bytes]) -> None:
        """Apply batches as they come; rows are flushed in the background, in order.

        The stream does not ack by itself: a batch is acked (and so may be
        committed) only once its rows are in ClickHouse and its delta is in the
        changelog.
        """
        manual = cast(faust.Stream[bytes], stream).noack()
        async for event in manual.events():
            partition = event.message.partition
            state = self.states.get(partition) or self._restore(partition)
            outcome = state.apply(orjson.loads(event.value), event.message.offset)
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.append(_Pending(manual, event, partition, state, outcome))
            self._pending_rows += outcome.rows.count()
            if self._pending_rows >= self.settings.flush_max_rows:
                await self._flushed()
                self._start_flush()

    async def _flush_timer(self) -> None:
        """Flushes what waited longer than the linger time when no batch fills it."""
        linger = self.settings.flush_linger_ms / 1000
        while True:
            await asyncio.sleep(linger / 2)
            flushing = self._flushing is not None and not self._flushing.done()
            if self._pending and not flushing and time.monotonic() - self._pending_since >= linger:
                self._start_flush()

    async def _flushed(self) -> None:
        """Wait for the running flush; its failure stops the worker instead of hiding."""
        if self._flushing is not None:
            await self._flushing

    def _start_flush(self) -> None:
        pending, self._pending, self._pending_rows = self._pending, [], 0
        self._flushing = asyncio.create_task(self._flush(pending), name="xp-flush")

    async def _flush(self, pending: list[_Pending]) -> None:
        rows = Rows()
        for item in pending:
            rows.extend(item.outcome.rows)
        await self._store(latest_partials(rows))
        for item in pending:
            if self.states.get(item.partition) is not item.state:
                continue  # revoked meanwhile: the new owner replays this batch
            await self._commit_state(item)

    async def _commit_state(self, item: _Pending) -> None:
        """After the rows are stored: dead letters, the delta, then the ack."""
        partition, offset = item.partition, item.event.message.offset
        for key, letter in item.outcome.dead_letters:
            await self.dead_letters.send(key=key, value=letter, partition=partition)
        delta_key = _key(partition, "d", f"{offset:020d}")
        self._put(partition, delta_key, item.outcome.delta)
        self._deltas.setdefault(partition, []).append(delta_key)
        self._since_snapshot[partition] += 1
        if self._since_snapshot[partition] >= self.settings.snapshot_every_batches:
            self._snapshot(partition, item.state, offset)
        self._count(item.outcome)
        await item.stream.ack(item.event)
        self.processed[partition] = offset + 1

    def _put(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Set or delete a state key, logging it to the changelog partition it belongs to.

        Faust would pick the partition of the stream's current event, which is
        not this batch's once flushes run behind the stream.
        """
        if value is None:
            self.table.data.pop(key, None)
            self.table.send_changelog(partition, key, None, value_serializer="raw")
        else:
            self.table.data[key] = value
            self.table.send_changelog(partition, key, value)

    def _count(self, outcome: Outcome) -> None:
        self.counts["stored"] += outcome.accepted
        self.counts["duplicates"] += outcome.duplicates
        self.counts["rejected"] += outcome.rejected
        self.counts["replayed"] += outcome.skipped
        obs.record_outcome(outcome)

    async def in_sink_thread(self, fn: Callable[..., Any], /, *args: Any) -> Any:
        """Run `fn` on the sink's thread, after the writes queued before it.

        chDB takes one caller at a time, and the alert evaluation that reads
        through here sees everything stored before it asked.
        """
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

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
            self._put(partition, key, orjson.dumps(chunk, option=_DUMP))
            keys.append(key)
        self._put(partition, _key(partition, "snap"), orjson.dumps({"seq": seq, "n": len(keys)}))
        for key in self._deltas.get(partition, []) + self._snapshot_keys.get(partition, []):
            self._put(partition, key, None)
        self._deltas[partition] = []
        self._snapshot_keys[partition] = keys
        self._since_snapshot[partition] = 0
