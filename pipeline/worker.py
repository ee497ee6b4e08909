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
from collections.abc import Callable, Coroutine, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from clickhouse_connect.driver.client import Client
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, EventT

from pipeline import observability as obs
from pipeline.bulk import BulkProcesses, bulk_group
from pipeline.clickhouse import Rows, Sink
from pipeline.config import Settings
from pipeline.errors import WorkerStuck, XpError
from pipeline.faults import FaultSwitch
from pipeline.gc_tuning import tune_gc
from pipeline.offsets import LogEnds
from pipeline.processor import Outcome, PartitionState
from pipeline.topics import COMPRESSION, MAX_MESSAGE_BYTES, whole_message_consumer

log = logging.getLogger("xp.worker")

_DUMP = orjson.OPT_NON_STR_KEYS
#: Journeys (or seen ids, windows) per snapshot chunk: keeps each changelog message small.
CHUNK_ITEMS = 5_000
_SINK_BACKOFF_MAX_S = 30.0
_REWIND_RETRY_S = 2.0
#: Batches wait here and none reached the agent for this long: fetch them again.
_UNDELIVERED_S = 5.0
_WATCH_EVERY_S = 1.0


def _key(partition: int, *parts: object) -> bytes:
    """State keys: `p<partition>/d/<seq>` deltas, `/s/<seq>/<i>` chunks, `/m/<seq>` pointers."""
    return "/".join([f"p{partition}", *map(str, parts)]).encode()


def _seq(key: bytes) -> int:
    """The batch offset a delta or snapshot pointer key was written for."""
    return int(key.split(b"/")[2])


def snapshot_chunks(snapshot: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Split a snapshot into deltas of at most CHUNK_ITEMS items each.

    Applying the chunks in order rebuilds the state, because every chunk carries
    the offsets and watermark and the rest is keyed data that only adds up.
    """
    base = {"a": snapshot["a"], "w": snapshot["w"], "gd": [], "sd": [], "jd": [], "ld": []}
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


def _shorten_fetch_wait(wait_ms: int) -> None:
    """Make Faust's consumer ask the broker to hold fetches for `wait_ms` at most.

    Faust fixes `fetch_max_wait_ms` at 1,500 ms, and the embedded broker holds
    a fetch that long even when data arrives: measured here, a median of 440 ms
    per hop at 1,500 ms and 3 ms at 50 ms. Faust exposes no setting for it, so
    the consumer it creates gets the value before it starts.
    """
    thread = aiokafka_driver.AIOKafkaConsumerThread
    create = thread._create_worker_consumer
    if getattr(create, "_xp_fetch_wait", None) == wait_ms:
        return

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = wait_ms
        return consumer

    create_worker_consumer._xp_fetch_wait = wait_ms  # type: ignore[attr-defined]
    thread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


@dataclass(slots=True)
class _Applied:
    """A batch applied to its partition's state, waiting for its rows to be stored."""

    event: EventT[bytes]
    partition: int
    offset: int
    state: PartitionState
    outcome: Outcome
    snapshot: list[bytes] | None


class Worker:
    """Bulk stage plus the Faust app, sharing one event loop and one ClickHouse sink."""

    def __init__(self, settings: Settings, bootstrap: str, client: Client) -> None:
        self.settings = settings
        self._bootstrap = bootstrap
        self.sink = Sink(client, FaultSwitch(settings.sink_fault_file))
        self.bulk = BulkProcesses(settings, bootstrap)
        self.counts: Counter[str] = Counter()
        self.processed: dict[int, int] = {}
        self.states: dict[int, PartitionState] = {}
        self._deltas: dict[int, list[bytes]] = {}
        self._snapshot_keys: dict[int, list[bytes]] = {}
        self._since_snapshot: Counter[int] = Counter()
        #: Per partition, the batch of the newest state key written or restored here.
        self._written: dict[int, int] = {}
        #: Partitions revoked since their state was last checked.
        self._check: set[int] = set()
        #: Per partition, the batch offset to apply next, and where it was last fetched again.
        self._next: dict[int, int] = {}
        self._rewound: dict[int, tuple[int, float]] = {}
        self._delta_bytes: Counter[int] = Counter()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xp-sink")
        #: Why the worker must exit: the agent crashed, or (`_stuck`) the watchdog found it stuck.
        self._failure: str | None = None
        self._stuck = False
        self._sink_failing = False
        self._failing_since = 0.0
        #: When this worker last applied a batch, or last had nothing to apply.
        self._progress_at = time.monotonic()
        #: Since when the agent has waited for a batch (None: it is busy with one).
        self._idle_since: float | None = time.monotonic()
        _shorten_fetch_wait(settings.fetch_max_wait_ms)
        self.app = faust.App(
            settings.app_id,
            broker=f"kafka://{bootstrap}",
            store="memory://",
            # Faust's default is `{appid}-data` in the working directory.
            datadir=str(settings.data_dir / "faust"),
            web_enabled=False,
            broker_session_timeout=6,
            broker_heartbeat_interval=1,
            broker_rebalance_timeout=4,
            broker_commit_interval=settings.commit_interval_s,
            topic_partitions=settings.partitions,
            consumer_auto_offset_reset="earliest",
            producer_max_request_size=MAX_MESSAGE_BYTES,
            consumer_max_fetch_size=MAX_MESSAGE_BYTES,
            producer_acks=-1,
            producer_compression_type=COMPRESSION,
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
            extra_topic_configs={
                "max.message.bytes": str(MAX_MESSAGE_BYTES),
                "compression.type": "producer",
            },
        )
        self.app.agent(self.batches, name="xp-process")(self._agent)
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.on_partitions_assigned.connect(self._on_assigned)
        self.app.timer(_WATCH_EVERY_S, name="xp-watchdog")(self._watch)
        self.app.timer(_REWIND_RETRY_S, name="xp-rewind")(self._rewind_again)
        #: Called with every flush's rows once ClickHouse has them (the benchmark's clock).
        self.stored_listeners: list[Callable[[Rows], None]] = []
        # Read each group's committed offsets without joining the group.
        self._group_view = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=settings.app_id, enable_auto_commit=False
        )
        self._bulk_view = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=bulk_group(settings), enable_auto_commit=False
        )
        # Not `end_offsets`: the embedded broker lists ends short of the log (pipeline/offsets.py).
        self._ends = LogEnds(bootstrap, settings.fetch_max_wait_ms)

    async def start(self) -> None:
        await self._group_view.start()
        await self._bulk_view.start()
        await self._ends.start()
        await self.app.start()
        tune_gc()

    async def stop(self) -> None:
        """Stop taking input, store what was applied, then leave the group.

        Not when stuck: the stuck write would hold this up forever, so the
        caller exits the process instead (the changelog and committed offsets
        make that as safe as a crash).
        """
        if self._stuck:
            return
        await asyncio.get_running_loop().run_in_executor(None, self.bulk.stop)
        await self.app.stop()
        await self._group_view.stop()
        await self._bulk_view.stop()
        await self._ends.stop()
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
        ends = await self._ends.of(touch + batch)
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
        if self._stuck:
            raise WorkerStuck(self._failure)
        if self.app.crashed:
            # Its services, the watchdog's timer among them, stopped with it: nothing
            # would ever be applied again, and stopping it cleanly can hang as well.
            raise WorkerStuck(f"Faust crashed: {self.app.crash_reason!r}")
        failure = self.bulk.failure() or self._failure
        if failure is not None:
            raise XpError(failure)

    async def _watch(self) -> None:
        """The watchdog: exit when batches wait on this worker and none was applied for long.

        A stuck agent (a write that never returns, a crashed or wedged
        coroutine) otherwise holds its partitions forever while the lag grows;
        exiting hands them to the rest of the group, or to a restart by the
        orchestrator. A sink that fails and retries is not stuck: it says so
        on /metrics and in the log, and a restart would not help it.
        """
        try:
            waiting = await self._batches_waiting()
        except Exception as exc:
            log.warning("watchdog sample failed: %s", exc)
            return
        now = time.monotonic()
        if not waiting or self._sink_failing:
            self._progress_at = now
        age = now - self._progress_at
        obs.BATCHES_WAITING.set(sum(waiting.values()))
        obs.PROGRESS_AGE.set(age)
        idle = now - self._idle_since if self._idle_since is not None else 0.0
        if waiting and idle > _UNDELIVERED_S:
            await self._fetch_undelivered(waiting, idle)
        if age > self.settings.watchdog_s and self._failure is None:
            partitions = ", ".join(f"{p} ({n} waiting)" for p, n in sorted(waiting.items()))
            self._failure = (
                f"watchdog: no batch applied for {age:.0f}s (XP_WATCHDOG_S="
                f"{self.settings.watchdog_s:g}) while batches wait on partitions {partitions}; "
                "exiting so that the partitions can be taken over or the worker restarted"
            )
            log.error("fetch state when stuck: %s", self._fetch_state(waiting))
            self._stuck = True

    async def _fetch_undelivered(self, waiting: dict[int, int], idle: float) -> None:
        """Fetch again the partitions whose batches were fetched and never delivered.

        Faust drops fetched records of a partition it does not count as active
        at that moment, or when the group generation changes during a fetch,
        and aiokafka's position has moved past them by then: nothing fetches
        them again. Seen after restarts (docs/reliability.md, "Batches fetched
        and never delivered"): batches waiting, aiokafka's position at the
        log's end, nothing buffered, the agent idle until the watchdog ended
        the worker. Here a partition that waits while the agent has waited for
        a batch for `_UNDELIVERED_S` is fetched again from its next batch, and
        `_rewind_again` repeats that until the batch comes. A batch that was
        only slow then comes twice, and applying a batch twice changes nothing.
        An agent busy storing (a slow or failing ClickHouse) is not idle: the
        batches wait in Faust's buffer then, and fetching them again would
        only fill it.
        """
        for partition in waiting:
            if partition in self._rewound:
                continue
            expected = await self._next_batch(partition)
            log.warning(
                "partition %d: batches wait and none came for %.0fs; fetching again from %d",
                partition,
                idle,
                expected,
            )
            await self._seek(partition, expected)

    def _fetch_state(self, partitions: Iterable[int]) -> str:
        """How Faust's and aiokafka's consumers see `partitions`, for the stuck worker's log.

        Batches can wait with nothing in the log to say why (docs/reliability.md,
        "Batches fetched and never delivered"); these are the switches that
        stop a partition's fetching, and where its fetched records are.
        """
        consumer = cast(Any, self.app.consumer)
        topic = self.settings.batches_topic
        try:
            kafka = consumer._thread._ensure_consumer()
            assignment = kafka._subscription.subscription.assignment
            parts = []
            for partition in partitions:
                tp = TP(topic, partition)
                state = assignment.state_value(tp) if assignment is not None else None
                position = state.position if state and state.has_valid_position else None
                parts.append(
                    f"partition {partition}: next {self._next.get(partition)}, Faust "
                    f"active={tp in consumer._active_partitions} "
                    f"paused={tp in consumer._paused_partitions} "
                    f"buffered={tp in consumer._buffered_partitions}, aiokafka "
                    f"assigned={state is not None} paused={state.paused if state else None} "
                    f"position={position} fetched={tp in kafka._fetcher._records}"
                )
            return (
                f"flow active={consumer.flow_active}, "
                f"flow control active={self.app.flow_control.is_active()}; " + "; ".join(parts)
            )
        except Exception as exc:  # Faust's and aiokafka's internals, read for a log line.
            return f"unavailable ({exc!r})"

    async def _batches_waiting(self) -> dict[int, int]:
        """Per partition assigned here, the batches on Kafka not applied yet."""
        topic = self.settings.batches_topic
        tps = [
            TopicPartition(topic, tp.partition)
            for tp in self.app.consumer.assignment()
            if tp.topic == topic
        ]
        if not tps:
            return {}
        ends = await self._ends.of(tps)
        waiting = {}
        for tp in tps:
            applied = await self._next_batch(tp.partition)
            if ends[tp] > applied:
                waiting[tp.partition] = ends[tp] - applied
        return waiting

    async def _next_batch(self, partition: int) -> int:
        """The batch offset to apply next: after the last applied, or the group's committed."""
        expected = self._next.get(partition)
        if expected is None:
            tp = TopicPartition(self.settings.batches_topic, partition)
            expected = await self._group_view.committed(tp) or 0
        return expected

    def _on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """A revoked partition's state is checked against the changelog if it comes back.

        It is kept, not dropped: the batch being stored while the partition was
        revoked still writes its delta, and Faust may commit that batch if the
        partition comes straight back; dropping the state would lose it.
        """
        revoked: set[TP] = args[0]
        self._check.update(
            tp.partition for tp in revoked if tp.topic == self.settings.batches_topic
        )

    def _on_assigned(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Time spent joining the group is not time stuck: the watchdog counts from here.

        The bulk stage starts here, once this worker is in its group: started
        with the app, it ran alone through the seconds of the join, piling up
        batches for a worker that could not take them yet, and `xp bench`
        then timed a worker that had the cores to itself.
        """
        self._progress_at = time.monotonic()
        if self._idle_since is not None:
            self._idle_since = self._progress_at
        self.bulk.start()

    async def _agent(self, stream: faust.StreamT[bytes]) -> None:
        """Apply batches while earlier ones are stored; commit each in order once stored.

        Acked by hand: Faust commits a batch's offset only once its rows are in
        ClickHouse and its delta is in the changelog. Applying is Python and
        storing is mostly chDB, which releases the GIL, so the two overlap; at
        most `XP_BATCHES_IN_FLIGHT` applied batches wait for their rows.
        """
        manual = cast(faust.Stream[bytes], stream).noack()
        pending: asyncio.Queue[_Applied] = asyncio.Queue(self.settings.batches_in_flight)
        committer = asyncio.ensure_future(self._guarded(self._commit_in_order(manual, pending)))
        try:
            await self._guarded(self._apply_stream(manual, pending))
        finally:
            committer.cancel()

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception as exc:
            # Faust would log this and carry on without the agent: the worker
            # would hold its partitions and do nothing. Exit instead.
            self._failure = f"the batch agent crashed: {exc!r}"
            log.exception("the batch agent crashed")
            raise

    async def _apply_stream(
        self, manual: faust.StreamT[bytes], pending: asyncio.Queue[_Applied]
    ) -> None:
        async for event in manual.events():
            self._idle_since = None
            await self._apply(event, pending)
            self._idle_since = time.monotonic()

    async def _apply(self, event: EventT[bytes], pending: asyncio.Queue[_Applied]) -> None:
        """Apply one batch in order, and queue it for storing: waits while the queue is full."""
        partition, offset = event.message.partition, event.message.offset
        if not await self._in_order(partition, offset):
            self._release(event)
            return
        if partition in self._check:
            # Checked against the changelog once every applied batch wrote its delta.
            await pending.join()
            self._check.discard(partition)
            await self._verify(partition)
        state = self.states.get(partition) or await self._restore(partition)
        outcome = state.apply(event.value, offset)
        self._next[partition] = offset + 1
        await pending.put(
            _Applied(
                event,
                partition,
                offset,
                state,
                outcome,
                # Taken now: by the time the rows are stored the state has moved on.
                self._due_snapshot(partition, state, outcome) if outcome.changed else None,
            )
        )

    async def _commit_in_order(
        self, manual: faust.StreamT[bytes], pending: asyncio.Queue[_Applied]
    ) -> None:
        """Store every waiting batch's rows in one write, then each batch's delta and ack in order.

        One write for all: a ClickHouse insert costs 5-15 ms whatever its size
        (a part to create, and to merge later), and each batch fills up to
        seven tables. At a steady 10,000 events/s a round of the bulk stage is
        a small batch for each partition, and writing them one by one took
        longer than the round itself: latency grew until the rounds grew.
        """
        while True:
            group = [await pending.get()]
            while not pending.empty():
                group.append(pending.get_nowait())
            try:
                await self._store(Rows.joined([applied.outcome.rows for applied in group]))
                for applied in group:
                    for listener in self.stored_listeners:
                        listener(applied.outcome.rows)
                    self._commit_state(applied)
                    await manual.ack(applied.event)
                self._progress_at = time.monotonic()
            finally:
                for _ in group:
                    pending.task_done()

    async def _in_order(self, partition: int, offset: int) -> bool:
        """Whether this batch is the next one of its partition; if batches went missing, refetch.

        Measured here: after a rebalance Faust sometimes delivers a partition's
        batches from well past the committed offset, having dropped the ones it
        had buffered. A skipped batch is a lost batch, so the consumer is sent
        back to the first one missing; later batches are released unacked
        (`_release`) and come again after it.
        """
        expected = self._next.get(partition)
        if expected is None:
            expected = self._next[partition] = await self._next_batch(partition)
        if offset <= expected:
            return True
        # Batches fetched before the seek still arrive: seek once per gap, and
        # again only if the missing batch has not come after a while.
        last = self._rewound.get(partition)
        now = time.monotonic()
        if last is None or last[0] != expected or now - last[1] > _REWIND_RETRY_S:
            log.warning(
                "partition %d: batch %d arrived, %d expected; fetching again from %d",
                partition,
                offset,
                expected,
                expected,
            )
            await self._seek(partition, expected)
        return False

    async def _seek(self, partition: int, offset: int) -> None:
        """Fetch a partition again from `offset`, which Faust then delivers as new.

        Faust records the offsets it jumped over as a gap and counts a gap as
        acked once a later offset is acked: batches fetched again after the
        jump would be committed as soon as the first two of them are, before
        they are applied. The gap is forgotten here; the batches fill it.
        """
        tp = TP(self.settings.batches_topic, partition)
        consumer = self.app.consumer
        consumer._gap.pop(tp, None)  # type: ignore[attr-defined]
        self._rewound[partition] = (offset, time.monotonic())
        # In the consumer's own thread. Faust's `seek` calls aiokafka from this one,
        # and a fetch running there at that moment failed (KeyError in aiokafka's
        # `fetched_records`), which stopped Faust's fetcher for good.
        thread = consumer._thread  # type: ignore[attr-defined]
        await thread.call_thread(thread.seek, tp, offset)
        consumer._read_offset[tp] = offset or None  # type: ignore[attr-defined]

    def _release(self, event: EventT[bytes]) -> None:
        """Let Faust stop waiting for a batch skipped by `_in_order`, without acking it.

        Faust waits for every batch it handed over to be acked before it lets
        a rebalance go on; a skipped batch is not acked until it comes again
        in order, which cannot happen while the rebalance waits: measured here,
        the worker then failed every heartbeat with "rebalancing" for good.
        Marked done without an ack, it is neither waited for nor committed:
        its offset is committed when it comes again and is applied.
        """
        message = event.message
        message.acked = True
        self.app.consumer._unacked_messages.discard(message)  # type: ignore[attr-defined]

    async def _rewind_again(self) -> None:
        """Fetch a missing batch again when it has not come since the last seek.

        `_in_order` seeks when a later batch arrives; Faust can lose that seek
        (measured here: batches 11 to 25 of a partition never came after the
        seek back from batch 26, its last), and then no batch arrives to
        repeat it and the partition stalls for good.
        """
        topic = self.settings.batches_topic
        assigned = {tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic}
        now = time.monotonic()
        for partition, (expected, at) in list(self._rewound.items()):
            if partition not in assigned or self._next.get(partition, expected) != expected:
                del self._rewound[partition]  # moved on, or no longer here
            elif now - at > _REWIND_RETRY_S:
                log.warning(
                    "partition %d: batch %d still missing; fetching again", partition, expected
                )
                await self._seek(partition, expected)

    def _commit_state(self, applied: _Applied) -> None:
        """After the rows are stored: dead letters, the delta, maybe a snapshot."""
        partition, offset, state, outcome = (
            applied.partition,
            applied.offset,
            applied.state,
            applied.outcome,
        )
        if self.states.get(partition) is not state:
            return  # replaced while its rows were stored: the new state replays this batch
        self._count(outcome)
        self.processed[partition] = offset + 1
        if not outcome.changed:
            # A replayed batch whose delta is stored already: writing its empty
            # delta again, under the same key, would erase what that batch did.
            return
        for key, letter in outcome.dead_letters:
            self.dead_letters.send_soon(key=key, value=letter, partition=partition)
        delta_key = _key(partition, "d", f"{offset:020d}")
        self._put(partition, delta_key, outcome.delta)
        self._written[partition] = offset
        self._deltas.setdefault(partition, []).append(delta_key)
        if applied.snapshot is not None:
            self._write_snapshot(partition, applied.snapshot, offset)

    async def _read_changelog(self, partition: int) -> dict[bytes, bytes]:
        """The live keys of one changelog partition, read from its start to its end."""
        await self.app.producer.flush()
        tp = TopicPartition(self.table.changelog_topic.get_topic_name(), partition)
        reader = whole_message_consumer(
            self._bootstrap, fetch_max_wait_ms=self.settings.fetch_max_wait_ms
        )
        await reader.start()
        stored: dict[bytes, bytes] = {}
        try:
            reader.assign([tp])
            await reader.seek_to_beginning(tp)
            end = (await reader.end_offsets([tp]))[tp]
            while await reader.position(tp) < end:
                for records in (await reader.getmany(tp, timeout_ms=500)).values():
                    for record in records:
                        if record.value is None:
                            stored.pop(record.key, None)
                        else:
                            stored[record.key] = record.value
        finally:
            await reader.stop()
        return stored

    def _put(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Write (or, with None, delete) a state key on its partition's changelog.

        The changelog is the state's store: `_restore` reads it back, so the
        copy Faust keeps in memory is never consulted.
        """
        self.table.send_changelog(partition, key, value, value_serializer="raw")

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
                obs.SINK_FAILING.set(1)
                if not self._sink_failing:
                    self._failing_since = time.monotonic()
                self._sink_failing = True
                log.warning("ClickHouse write failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _SINK_BACKOFF_MAX_S)
                continue
            if self._sink_failing:
                self._sink_failing = False
                obs.SINK_FAILING.set(0)
                log.warning(
                    "ClickHouse writes work again after %.0fs of failures",
                    time.monotonic() - self._failing_since,
                )
            obs.SINK_SECONDS.observe(time.perf_counter() - started)
            obs.SINK_ROWS.observe(rows.count())
            return

    async def _verify(self, partition: int) -> None:
        """Keep the state in memory only if nobody else wrote to its changelog since."""
        stored = await self._read_changelog(partition)
        newest = max((_seq(k) for k in stored if k.split(b"/")[1] in (b"d", b"m")), default=-1)
        if partition in self.states and newest != self._written.get(partition, -1):
            log.info("partition %d changed elsewhere (batch %d): restoring", partition, newest)
            await self._restore(partition, stored)

    async def _restore(
        self, partition: int, stored: dict[bytes, bytes] | None = None
    ) -> PartitionState:
        """Rebuild from the newest snapshot plus the deltas written after it.

        The changelog partition is read here, after flushing what this process
        still had to send, rather than taken from Faust's in-memory table: that
        copy was seen to lag a partition that came back in a rebalance. Every
        state key is written once and later deleted, never overwritten, so the
        newest pointer names the snapshot and later deltas complete it.
        """
        if stored is None:
            stored = await self._read_changelog(partition)
        keys = sorted(stored)
        s = self.settings
        state = PartitionState(partition, s.allowed_lateness_s, s.session_gap_s, s.journey_ttl_s)
        metas = [key for key in keys if key.startswith(_key(partition, "m", ""))]
        snap_seq = -1
        current: list[bytes] = []
        if metas:
            snap_seq = _seq(metas[-1])
            count = orjson.loads(stored[metas[-1]])["n"]
            current = [_key(partition, "s", f"{snap_seq:020d}", i) for i in range(count)]
            for key in current:
                state.apply_delta(orjson.loads(stored[key]))
            current.append(metas[-1])
        deltas = [k for k in keys if k.startswith(_key(partition, "d", "")) and _seq(k) > snap_seq]
        for key in deltas:
            state.apply_delta(orjson.loads(stored[key]))
        self._deltas[partition] = deltas
        self._written[partition] = max([snap_seq, *map(_seq, deltas)])
        self._snapshot_keys[partition] = [
            key for key in keys if key not in current and key not in deltas
        ]
        self.states[partition] = state
        log.info(
            "partition %d restored: %d journeys, snapshot %d + %d deltas",
            partition,
            len(state.journeys),
            snap_seq,
            len(deltas),
        )
        return state

    def _due_snapshot(
        self, partition: int, state: PartitionState, outcome: Outcome
    ) -> list[bytes] | None:
        """The encoded snapshot chunks when this batch ends a snapshot interval.

        It must be the state as of this batch exactly: a snapshot that held a
        later batch would mark it applied though its rows may never have
        reached ClickHouse.
        """
        self._since_snapshot[partition] += 1
        self._delta_bytes[partition] += len(outcome.delta)
        if (
            self._since_snapshot[partition] < self.settings.snapshot_every_batches
            and self._delta_bytes[partition] < self.settings.snapshot_delta_bytes
        ):
            return None
        self._since_snapshot[partition] = 0
        self._delta_bytes[partition] = 0
        return [orjson.dumps(chunk, option=_DUMP) for chunk in snapshot_chunks(state.snapshot())]

    def _write_snapshot(self, partition: int, chunks: list[bytes], seq: int) -> None:
        """Compact the changelog: chunks, then their pointer, then drop what they cover.

        Changelog messages of one partition keep their order, so once the
        pointer is there its chunks are too.
        """
        keys = []
        for i, chunk in enumerate(chunks):
            key = _key(partition, "s", f"{seq:020d}", i)
            self._put(partition, key, chunk)
            keys.append(key)
        meta = _key(partition, "m", f"{seq:020d}")
        self._put(partition, meta, orjson.dumps({"n": len(chunks)}))
        keys.append(meta)
        for key in self._deltas.get(partition, []) + self._snapshot_keys.get(partition, []):
            self._put(partition, key, None)
        self._deltas[partition] = []
        self._snapshot_keys[partition] = keys
