"""The bulk stage: touchpoints (one event per message) into compact batches for Faust.

Faust pays about 115 µs per message whatever the agent does, so the stateful
stage must see many events per message. This stage reads the public topic with
aiokafka `getmany`, runs the stateless checks, routes every record by identity
to an internal partition and writes one batch per internal partition. Each
record keeps its source partition and offset, so a batch written twice (this
stage is at-least-once: offsets are committed after the batches are on Kafka)
changes nothing the second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.partitioner import murmur2

from pipeline.batches import BatchWriter, event_record, record_size, rejected_record
from pipeline.config import Settings
from pipeline.embedded import die_with_parent
from pipeline.gc_tuning import tune_gc
from pipeline.topics import COMPRESSION, MAX_MESSAGE_BYTES, whole_message_consumer
from pipeline.validate import Accepted, check

log = logging.getLogger("xp.bulk")


def partition_for(identity: str, partitions: int) -> int:
    """Kafka's default partitioner on the identity key (docs/semantics.md §2).

    Producers key by identity, so this is the record's own partition and a
    partition's order is kept; only a mis-keyed event moves.
    """
    return (murmur2(identity.encode()) & 0x7FFFFFFF) % partitions


#: An encoded batch stays below this, so that the producer and the batches topic take
#: it; the rest of MAX_MESSAGE_BYTES is room for the Kafka record's own framing.
MAX_BATCH_BYTES = MAX_MESSAGE_BYTES - 64 * 1024


@dataclass
class Batcher:
    """Routes checked records to internal partitions; pure, so it is unit-tested.

    A partition whose records do not fit one message gets several batches, cut
    in the order the records came: each source partition's offsets then rise
    from one batch to the next, as the stateful stage's replay check expects.
    Without the cut, a few hundred events near `max_event_bytes` in one round
    made a batch Kafka refuses, and the stage failed on it again after every
    restart.
    """

    settings: Settings
    max_batch_bytes: int = MAX_BATCH_BYTES
    batches: dict[int, list[BatchWriter]] = field(default_factory=dict)

    def add(self, topic: str, record: ConsumerRecord[Any, Any]) -> None:
        raw: bytes = record.value if record.value is not None else b""
        received_ms = int(record.timestamp)
        result = check(
            raw,
            received_ms,
            max_event_bytes=self.settings.max_event_bytes,
            max_clock_skew_ms=self.settings.max_clock_skew_s * 1000,
        )
        if isinstance(result, Accepted):
            identity = result.identity
            if record.key == identity.encode() and record.partition < self.settings.partitions:
                q = record.partition  # keyed by identity, as producers should: already placed
            else:
                q = partition_for(identity, self.settings.partitions)
            header = event_record(record.partition, record.offset, received_ms, result, raw)
            self._batch(topic, q, record_size(header, raw)).add_event(header, raw)
        else:
            q = record.partition % self.settings.partitions
            header = rejected_record(
                record.partition,
                record.offset,
                received_ms,
                result.reason,
                result.detail,
                result.raw,
                result.truncated,
            )
            self._batch(topic, q, record_size(header, result.raw)).add_rejected(header, result.raw)

    def _batch(self, topic: str, q: int, adds: int) -> BatchWriter:
        """The batch of partition `q` that takes a record of at most `adds` bytes."""
        writers = self.batches.get(q)
        if writers is None:
            writers = self.batches[q] = [BatchWriter(topic)]
        batch = writers[-1]
        if (batch.events or batch.rejected) and batch.size_bound + adds > self.max_batch_bytes:
            batch = BatchWriter(topic)
            writers.append(batch)
        return batch

    def drain(self) -> list[tuple[int, bytes]]:
        """Encoded batches by internal partition, in order; empties the batcher."""
        out = [
            (q, batch.encode()) for q, writers in sorted(self.batches.items()) for batch in writers
        ]
        self.batches = {}
        return out


def bulk_group(settings: Settings) -> str:
    return f"{settings.app_id}-bulk"


class BulkStage:
    """Runs the bulk stage until `stop()`; one consumer group across all workers."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        s = self.settings
        consumer = whole_message_consumer(
            self.bootstrap,
            s.touchpoints_topic,
            group_id=bulk_group(s),
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            rebalance_timeout_ms=4000,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            max_request_size=MAX_MESSAGE_BYTES,
            linger_ms=0,
            compression_type=COMPRESSION,
        )
        await consumer.start()
        await producer.start()
        try:
            while not self._stopping.is_set():
                arrived_ms, got = await self._gather(consumer)
                if got:
                    await self._forward(producer, consumer, got.items(), arrived_ms)
        finally:
            await producer.stop()
            await consumer.stop()

    async def _gather(
        self, consumer: AIOKafkaConsumer
    ) -> tuple[int, dict[TopicPartition, list[ConsumerRecord[Any, Any]]]]:
        """Records until the batch is full or `batch_linger_ms` after the first arrived,
        and when the first arrived (wall clock, ms).

        At low rates `getmany` returns a handful of records at a time, and every
        batch costs the stateful stage a round of ClickHouse inserts whatever
        its size: lingering a little keeps batches large and latency low.
        """
        s = self.settings
        got: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = {}
        count = 0
        deadline: float | None = None
        arrived_ms = 0
        loop = asyncio.get_running_loop()
        while count < s.batch_max_events and not self._stopping.is_set():
            wait_ms = s.batch_linger_ms
            if deadline is not None:
                wait_ms = int((deadline - loop.time()) * 1000)
                if wait_ms <= 0:
                    break
            more = await consumer.getmany(
                timeout_ms=wait_ms, max_records=s.batch_max_events - count
            )
            if not more:
                if deadline is None:
                    continue
                break
            if deadline is None:
                deadline = loop.time() + s.batch_linger_ms / 1000
                arrived_ms = int(time.time() * 1000)
            for tp, records in more.items():
                got.setdefault(tp, []).extend(records)
                count += len(records)
        return arrived_ms, got

    async def _forward(
        self,
        producer: AIOKafkaProducer,
        consumer: AIOKafkaConsumer,
        got: Iterable[tuple[TopicPartition, list[ConsumerRecord[Any, Any]]]],
        arrived_ms: int,
    ) -> None:
        """Batches out, then the source offsets committed.

        Each batch is timestamped with when its round's first records arrived
        here: the time the pipeline started on them, which the benchmark's
        clock starts from (pipeline/bench.py).
        """
        batcher = Batcher(self.settings)
        commit: dict[TopicPartition, int] = {}
        for tp, records in got:
            for record in records:
                batcher.add(tp.topic, record)
            commit[tp] = records[-1].offset + 1
        sends = [
            await producer.send(
                self.settings.batches_topic, value, partition=q, timestamp_ms=arrived_ms
            )
            for q, value in batcher.drain()
        ]
        await asyncio.gather(*sends)
        await consumer.commit(commit)


def _process_main(settings_json: str, bootstrap: str) -> None:
    """A bulk-stage process: stops on SIGTERM, dies with its parent, leaves Ctrl-C to it."""
    # SIGKILL, not the SIGTERM that stops it gracefully: with the parent gone
    # (and an embedded broker with it) a graceful stop was seen to wait for
    # the broker forever. Nothing is lost: Kafka redelivers what it had not
    # committed.
    die_with_parent(signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = Settings(**orjson.loads(settings_json))
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)

    tune_gc()

    async def serve() -> None:
        stage = BulkStage(settings, bootstrap)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stage.stop)
        await stage.run()

    asyncio.run(serve())


class BulkProcesses:
    """The bulk stage in processes of its own, so it uses a core the Faust worker does not.

    The stage is stateless and has its own consumer group, so any number of
    these processes share the touchpoint partitions.
    """

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        context = multiprocessing.get_context("spawn")
        config = settings.model_dump_json()
        self.processes = [
            context.Process(
                target=_process_main, args=(config, bootstrap), name=f"xp-bulk-{i}", daemon=True
            )
            for i in range(settings.bulk_processes)
        ]
        self.started = False
        self.stopped = False

    def start(self) -> None:
        """Start the processes; again, or once stopped, it does nothing.

        The worker starts them on every assignment, and an assignment can
        still come while it stops: processes started then would outlive it.
        """
        if self.started or self.stopped:
            return
        for process in self.processes:
            process.start()
        self.started = True

    def failure(self) -> str | None:
        """Why a bulk process is gone, when one exited while it should run."""
        for process in self.processes:
            if process.exitcode is not None:
                return f"bulk stage process {process.name} exited with code {process.exitcode}"
        return None

    def peak_rss_mb(self) -> float:
        """The largest peak resident memory of the running bulk processes."""
        peaks = [0.0]
        for process in self.processes:
            with contextlib.suppress(OSError), open(f"/proc/{process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) / 1024)
        return max(peaks)

    def stop(self, timeout: float = 15.0) -> None:
        """Let each process commit what it forwarded; kill what does not stop in time."""
        self.stopped = True
        if not self.started:
            return
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join()
