"""`xp bench`: the raw ceiling, the full pipeline and its latency, on one topic and one data set.

The ceiling is what Python can do with the same messages at best (aiokafka
`getmany` plus orjson decoding), so `ratio` says how much of it the whole
pipeline keeps while validating, de-duplicating, keeping journey state,
windowing and storing rows. Speed is measured here, never in a timed test.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from pipeline import clickhouse
from pipeline.batches import read_batch
from pipeline.bulk import bulk_group
from pipeline.clickhouse import Rows
from pipeline.config import Settings
from pipeline.embedded import kafka
from pipeline.errors import XpError
from pipeline.ingest import file_lines, paced, produce
from pipeline.memory import Sample, median_between, resident
from pipeline.offsets import LogEnds
from pipeline.progress import Progress
from pipeline.runner import check_or_exit, open_clickhouse
from pipeline.simulate import SimulationConfig, encode, simulate
from pipeline.topics import ensure_topics, whole_message_consumer
from pipeline.worker import Worker

#: Simulated spans of the benchmark's traffic (see `bench_events`).
_SPAN_HOURS = 2
_MAX_SPANS = 12
_EVENT_ROW = 4  # position of received_at in an events row
_MEMORY_EVERY_S = 0.1


@dataclass
class BenchResult:
    events: int
    customers: int
    workers: int
    ceiling_eps: float
    pipeline_eps: float
    ratio: float
    pipeline_startup_s: float
    rows_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    latency_rate_eps: float
    #: The worker's peak; then medians over the 40-60% and 80-100% of the events stored.
    rss_mb: float
    rss_half_mb: float
    rss_end_mb: float
    #: Anonymous resident memory (pipeline/memory.py): the worker's own, without mapped files.
    rss_anon_half_mb: float
    rss_anon_end_mb: float
    bulk_rss_mb: float
    scale: dict[str, float] = field(default_factory=dict)
    http: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def bench_events(count: int, customers: int, seed: int) -> list[bytes]:
    """`count` simulated events of a population of `customers` people.

    One simulated span gives each person one journey, so larger counts take
    consecutive spans of the same population: people come back. The spans
    start a day ago, so the events are recent and in event-time order.
    """
    anchor = datetime.now(UTC) - timedelta(hours=_SPAN_HOURS * _MAX_SPANS)
    spans = (
        simulate(
            SimulationConfig(
                customers=customers,
                duration_s=_SPAN_HOURS * 3600,
                seed=seed + k,
                start=anchor + timedelta(hours=_SPAN_HOURS * k),
            )
        )
        for k in range(_MAX_SPANS)
    )
    events = [encode(e) for e in itertools.islice(itertools.chain.from_iterable(spans), count)]
    if len(events) < count:
        raise XpError(f"the simulator made {len(events):,} events, fewer than {count:,}")
    return events


def events_file(directory: Path, count: int, customers: int, seed: int) -> Path:
    """Write the events from a process of their own: the simulator's memory is not ours.

    The benchmark reports the pipeline's memory; a simulator that ran in the
    same process would leave its arenas behind and hide that number.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"bench-{count}-{customers}-{seed}.jsonl"
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_write_events, args=(str(path), count, customers, seed))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise XpError(f"generating the benchmark's events failed (exit {process.exitcode})")
    return path


def _write_events(path: str, count: int, customers: int, seed: int) -> None:
    Path(path).write_bytes(b"".join(line + b"\n" for line in bench_events(count, customers, seed)))


def live(lines: Iterable[bytes]) -> Iterator[bytes]:
    """The events as live traffic: each happens the moment it is sent."""
    for line in lines:
        event = orjson.loads(line)
        event.pop("sent_at", None)
        event["occurred_at"] = datetime.now(UTC).isoformat(timespec="milliseconds")
        yield orjson.dumps(event)


async def _produce_all(settings: Settings, bootstrap: str, lines: Iterable[bytes], n: int) -> None:
    progress = Progress("producing", n)
    sent = 0
    async for sent in produce(bootstrap, settings.touchpoints_topic, lines):
        progress.update(sent)
    progress.finish(sent)


#: The ceiling is the median of this many reads of the topic: one read varied by ±20% here.
CEILING_PASSES = 3


async def measure_ceiling(settings: Settings, bootstrap: str, n: int) -> float:
    """The median events/s of `CEILING_PASSES` reads of the whole topic.

    The consumer of the speed issue's table, as it is: the collector
    settings of `pipeline/gc_tuning.py` lift it too (to about 208,000
    events/s here against 150,000-175,000), and the README says so.
    """
    return statistics.median(
        [await _read_all(settings, bootstrap, n, k) for k in range(1, CEILING_PASSES + 1)]
    )


async def _read_all(settings: Settings, bootstrap: str, n: int, k: int) -> float:
    """aiokafka getmany + orjson on every message, from the first message to the last."""
    consumer = whole_message_consumer(
        bootstrap,
        settings.touchpoints_topic,
        group_id=f"xp-bench-ceiling-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    progress = Progress(f"ceiling {k}", n)
    count, first = 0, 0.0
    try:
        while count < n:
            got = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in got.values():
                if not first:
                    first = time.perf_counter()
                for record in records:
                    orjson.loads(record.value)
                count += len(records)
            progress.update(count)
    finally:
        await consumer.stop()
    elapsed = time.perf_counter() - first
    progress.finish(count)
    return n / elapsed


@dataclass
class _Clock:
    """What the worker's flushes tell the benchmark."""

    rows: int = 0
    latency_from_ms: int | None = None
    latencies: list[float] = field(default_factory=list)

    def on_stored(self, rows: Rows) -> None:
        self.rows += rows.count()
        if self.latency_from_ms is None:
            return
        now_ms = time.time() * 1000
        since = self.latency_from_ms
        self.latencies.extend(
            now_ms - row[_EVENT_ROW] for row in rows.events if row[_EVENT_ROW] >= since
        )


async def _until_accounted(worker: Worker, target: int, progress: Progress) -> None:
    """Wait for `target` events to be stored."""
    while worker.accounted < target:
        await asyncio.sleep(0.05)
        check_or_exit(worker)
        progress.update(worker.accounted)
    progress.finish(worker.accounted)


async def run_bench(
    settings: Settings, *, events: int, customers: int, rate: float, seconds: float
) -> BenchResult:
    """One run: produce, ceiling, pipeline, then a fixed-rate run for latency."""
    lines = events_file(settings.data_dir, events, customers, seed=11)
    latency_count = int(rate * seconds)
    latency_lines = events_file(settings.data_dir, latency_count, customers, seed=12)
    client = open_clickhouse(settings)
    clickhouse.reset(client)
    with kafka(settings) as bootstrap:
        await ensure_topics(bootstrap, settings)
        await _produce_all(settings, bootstrap, file_lines(lines), events)
        ceiling = await measure_ceiling(settings, bootstrap, events)

        clock = _Clock()
        worker = Worker(settings, bootstrap, client)
        worker.stored_listeners.append(clock.on_stored)
        started = time.time()
        await worker.start()
        try:
            memory: list[Sample] = []
            sampler = asyncio.create_task(_sample_memory(worker, memory))
            await _until_accounted(worker, events, Progress("pipeline ", events))
            done = time.time()
            first = await first_batch_at(bootstrap, settings)
            elapsed = done - first
            pipeline_eps = events / elapsed
            rows_per_s = clock.rows / elapsed
            sampler.cancel()
            memory.append((worker.accounted, resident()))
            half = median_between(memory, events * 2 // 5, events * 3 // 5)
            end = median_between(memory, events * 4 // 5, events)

            clock.latency_from_ms = int(time.time() * 1000)
            feeder = _start_feeder(settings, bootstrap, latency_lines, rate)
            total = events + latency_count
            await _until_accounted(worker, total, Progress("latency  ", total))
            feeder.join()
            bulk_rss = worker.bulk.peak_rss_mb()
        finally:
            await worker.stop()
    latencies = sorted(clock.latencies)
    return BenchResult(
        events=events,
        customers=customers,
        workers=1,
        ceiling_eps=ceiling,
        pipeline_eps=pipeline_eps,
        ratio=pipeline_eps / ceiling,
        pipeline_startup_s=first - started,
        rows_per_s=rows_per_s,
        p50_ms=statistics.median(latencies) if latencies else None,
        p99_ms=latencies[int(len(latencies) * 0.99)] if latencies else None,
        latency_rate_eps=rate,
        rss_mb=max(sample.total_mb for _, sample in memory),
        rss_half_mb=half.total_mb,
        rss_end_mb=end.total_mb,
        rss_anon_half_mb=half.anonymous_mb,
        rss_anon_end_mb=end.anonymous_mb,
        bulk_rss_mb=bulk_rss,
    )


def _start_feeder(
    settings: Settings, bootstrap: str, path: Path, rate: float
) -> multiprocessing.process.BaseProcess:
    """Live traffic from a process of its own, as producers are: no share of our GIL."""
    context = multiprocessing.get_context("spawn")
    process = context.Process(
        target=_feed, args=(bootstrap, settings.touchpoints_topic, str(path), rate), daemon=True
    )
    process.start()
    return process


def _feed(bootstrap: str, topic: str, path: str, rate: float) -> None:
    async def run() -> None:
        async for _ in produce(bootstrap, topic, paced(live(file_lines(Path(path))), rate)):
            pass

    asyncio.run(run())


async def _sample_memory(worker: Worker, samples: list[Sample]) -> None:
    """The worker's memory against events stored, through the pipeline run, until cancelled."""
    while True:
        samples.append((worker.accounted, resident()))
        await asyncio.sleep(_MEMORY_EVERY_S)


async def _group_offsets(
    bootstrap: str, group: str, tps: list[TopicPartition]
) -> dict[TopicPartition, int]:
    view = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await view.start()
    try:
        return {tp: await view.committed(tp) or 0 for tp in tps}
    finally:
        await view.stop()


async def _batches_below(
    bootstrap: str, offsets: dict[TopicPartition, int]
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """The internal batch messages below `offsets`, partition by partition."""
    reader = whole_message_consumer(bootstrap)
    await reader.start()
    try:
        for tp, end in offsets.items():
            reader.assign([tp])
            reader.seek(tp, 0)
            while await reader.position(tp) < end:
                for record in (await reader.getmany(tp, timeout_ms=500)).get(tp, []):
                    if record.offset < end:
                        yield record
    finally:
        await reader.stop()


async def _events_below(bootstrap: str, offsets: dict[TopicPartition, int]) -> int:
    """Events and rejected messages in the internal batches below `offsets`."""
    count = 0
    async for record in _batches_below(bootstrap, offsets):
        assert record.value is not None
        batch = read_batch(record.value)
        count += len(batch.events) + len(batch.rejected)
    return count


async def first_batch_at(bootstrap: str, settings: Settings) -> float:
    """When the bulk stage got the run's first records (wall clock, s): the pipeline's start.

    Every batch carries the time its round's first records arrived
    (pipeline/bulk.py), so the earliest batch tells when the pipeline began
    working, after the group joins: both stages' work on every event is
    inside a window that starts there. The topic must hold this run's
    batches only.
    """
    tps = [TopicPartition(settings.batches_topic, p) for p in range(settings.partitions)]
    ends = LogEnds(bootstrap, settings.fetch_max_wait_ms)
    await ends.start()
    try:
        firsts = {tp: 1 for tp, end in (await ends.of(tps)).items() if end}
    finally:
        await ends.stop()
    stamps = [record.timestamp async for record in _batches_below(bootstrap, firsts)]
    if not stamps:
        raise XpError(f"no batches on {settings.batches_topic}: nothing was processed")
    return min(stamps) / 1000


async def measure_workers(settings: Settings, bootstrap: str, workers: int, n: int) -> float:
    """Events/s of `workers` worker processes in one group, from committed offsets.

    Each process needs its own chDB (one engine per process), so each writes
    to a directory of its own, and each run has a batches topic of its own: a
    new group on a shared one would apply the earlier runs' batches as well.
    The clock runs from the bulk stage's first records (`first_batch_at`),
    so start-up and the group join stay out, to the moment every batch is
    seen committed. The workers commit every 0.2 s and are asked every
    0.2 s, which bounds the precision at the end.
    """
    app_id = f"xp-bench-{workers}w-{uuid.uuid4().hex[:6]}"
    run = settings.model_copy(update={"app_id": app_id, "batches_topic": f"{app_id}-batches"})
    await ensure_topics(bootstrap, run)
    env = {
        **os.environ,
        "XP_KAFKA_BOOTSTRAP": bootstrap,
        "XP_APP_ID": app_id,
        "XP_BATCHES_TOPIC": run.batches_topic,
        "XP_LOG_LEVEL": "ERROR",
        "XP_COMMIT_INTERVAL_S": "0.2",
    }
    xp = str(Path(sys.executable).parent / "xp")
    data_dirs = [settings.data_dir / f"{app_id}-{i}" for i in range(workers)]
    procs = [
        subprocess.Popen(
            [xp, "worker", "--data-dir", str(data_dir)],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for data_dir in data_dirs
    ]
    touch = [TopicPartition(run.touchpoints_topic, p) for p in range(run.partitions)]
    batches = [TopicPartition(run.batches_topic, p) for p in range(run.partitions)]
    progress = Progress(f"{workers} worker{'s' if workers > 1 else ''}", n)
    # Outside the workers' group, as `log_end_offsets` requires, and one for the whole run.
    ends = LogEnds(bootstrap, run.fetch_max_wait_ms)
    await ends.start()
    try:
        while True:
            await asyncio.sleep(0.2)
            for proc in procs:
                if proc.poll() is not None:
                    raise XpError(f"a benchmark worker exited with code {proc.returncode}")
            bulk = sum((await _group_offsets(bootstrap, bulk_group(run), touch)).values())
            progress.update(bulk)
            if bulk < n:
                continue
            applied = await _group_offsets(bootstrap, app_id, batches)
            if all(applied[tp] >= end for tp, end in (await ends.of(batches)).items()):
                done = time.time()
                break
    finally:
        await ends.stop()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
        for data_dir in data_dirs:
            # A copy of every event per run: a run's data is its numbers, not its tables.
            shutil.rmtree(data_dir, ignore_errors=True)
    progress.finish(n)
    if (got := await _events_below(bootstrap, applied)) != n:
        raise XpError(f"the {workers}-worker run applied {got:,} events, not the {n:,} produced")
    return n / (done - await first_batch_at(bootstrap, run))


async def run_scale(
    settings: Settings, *, events: int, customers: int, workers: int
) -> dict[str, float]:
    """Throughput of 1..`workers` worker processes on the same topic."""
    lines = events_file(settings.data_dir, events, customers, seed=11)
    out: dict[str, float] = {}
    with kafka(settings) as bootstrap:
        await ensure_topics(bootstrap, settings)
        await _produce_all(settings, bootstrap, file_lines(lines), events)
        for k in range(1, workers + 1):
            out[f"{k}_workers_eps"] = await measure_workers(settings, bootstrap, k, events)
    return out


def report(result: BenchResult) -> str:
    """The numbers for people."""
    lines = [
        f"xp bench: {result.events:,} events, {result.customers:,} customers, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores",
        f"  ceiling (aiokafka getmany + orjson)   {result.ceiling_eps:>10,.0f} events/s",
        f"  xp pipeline (everything, stored)      {result.pipeline_eps:>10,.0f} events/s"
        f"   ratio {result.ratio:.2f}",
        f"  rows into ClickHouse                  {result.rows_per_s:>10,.0f} rows/s",
        f"  pipeline start-up (group joins)       {result.pipeline_startup_s:>10.1f} s",
    ]
    if result.p50_ms is not None and result.p99_ms is not None:
        lines.append(
            f"  latency at {result.latency_rate_eps:,.0f} events/s, produce → row visible: "
            f"p50 {result.p50_ms:,.0f} ms, p99 {result.p99_ms:,.0f} ms"
        )
    lines += [
        f"  RSS: worker {result.rss_half_mb:,.0f} MB around half the events, "
        f"{result.rss_end_mb:,.0f} MB in the last fifth, peak {result.rss_mb:,.0f} MB; "
        f"bulk stage {result.bulk_rss_mb:,.0f} MB",
        f"  worker's anonymous memory (without mapped files): {result.rss_anon_half_mb:,.0f} MB "
        f"around half the events, {result.rss_anon_end_mb:,.0f} MB in the last fifth",
    ]
    if result.http:
        lines.append(
            f"  collector (wrk, loopback): {result.http['accepted_eps']:,.0f} events/s accepted, "
            f"p99 {result.http['p99_ms']:,.0f} ms"
        )
    for name, eps in result.scale.items():
        count = int(name.split("_")[0])
        label = f"{count} worker process{'es' if count > 1 else ''} (scale run)"
        lines.append(f"  {label:<38}{eps:>10,.0f} events/s")
    return "\n".join(lines)
