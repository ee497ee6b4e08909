"""Runs the whole path in one process: Kafka, bulk stage, Faust worker and ClickHouse.

`xp process`, `xp demo` and `xp worker` share this, with the embedded broker
and chDB by default or real servers from `XP_KAFKA_BOOTSTRAP` and
`XP_CLICKHOUSE_URL`: one code path either way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from pipeline import clickhouse
from pipeline.alerting import Alerting
from pipeline.config import Settings
from pipeline.embedded import kafka
from pipeline.errors import WorkerStuck, XpError
from pipeline.health import ConsumerHealth
from pipeline.ingest import produce
from pipeline.progress import Progress
from pipeline.topics import ensure_topics
from pipeline.worker import Worker

log = logging.getLogger("xp.runner")

#: How a run puts its lines on the touchpoints topic (Kafka directly unless given);
#: yields the running count of lines handed over.
Feed = Callable[[Settings, str, Iterable[bytes] | AsyncIterator[bytes]], AsyncIterator[int]]

#: The exit status of a worker the watchdog found stuck.
STUCK_EXIT_CODE = 3

#: How long the pipeline may make no progress at all before a run gives up.
STALL_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class RunResult:
    received: int
    stored: int
    duplicates: int
    rejected: int
    seconds: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.received / self.seconds) if self.seconds else 0,
        }


def open_clickhouse(settings: Settings) -> Client:
    """Connect and bring the schema up to date; every command that touches data starts here."""
    # Imported here: pipeline.serve builds on this module.
    from pipeline.serve import refuse_if_served

    refuse_if_served(settings)
    client = clickhouse.connect(settings.clickhouse_url, settings.data_dir)
    clickhouse.migrate(client)
    return client


async def run_through(
    settings: Settings,
    lines: Iterable[bytes] | AsyncIterator[bytes],
    *,
    total: int | None,
    label: str,
    via: Feed | None = None,
) -> tuple[RunResult, Client]:
    """Produce `lines` to the touchpoints topic and run the pipeline until all are stored."""
    started = time.monotonic()
    client = open_clickhouse(settings)
    with kafka(settings) as bootstrap:
        if settings.kafka_bootstrap is None:
            # The embedded broker keeps nothing between runs, and with it go the
            # offsets and state that exactness rests on: start a fresh dataset.
            clickhouse.reset(client)
        await ensure_topics(bootstrap, settings)
        worker = Worker(settings, bootstrap, client)
        alerts = Alerting(settings, client, worker)
        ConsumerHealth(settings, bootstrap, worker)
        await worker.start()
        try:
            sent = await _produce_and_wait(settings, bootstrap, worker, lines, total, label, via)
            await alerts.finish()
        finally:
            await worker.stop()
    counts = worker.counts
    result = RunResult(
        sent, counts["stored"], counts["duplicates"], counts["rejected"], time.monotonic() - started
    )
    return result, client


async def _produce_and_wait(
    settings: Settings,
    bootstrap: str,
    worker: Worker,
    lines: Iterable[bytes] | AsyncIterator[bytes],
    total: int | None,
    label: str,
    via: Feed | None,
) -> int:
    progress = Progress(label, total)
    sent = 0

    async def feed() -> None:
        nonlocal sent
        counts = (
            via(settings, bootstrap, lines)
            if via is not None
            else produce(bootstrap, settings.touchpoints_topic, lines)
        )
        async for count in counts:
            sent = count

    feeder = asyncio.create_task(feed(), name="xp-feed")
    last_change, last_seen = time.monotonic(), -1
    try:
        while True:
            await asyncio.sleep(0.25)
            check_or_exit(worker)
            done = worker.accounted
            progress.update(done, f"sent {sent:,}  rejected {worker.counts['rejected']:,}")
            if feeder.done():
                feeder.result()
                if done >= sent and await worker.idle():
                    break
            if done != last_seen:
                last_change, last_seen = time.monotonic(), done
            elif time.monotonic() - last_change > STALL_TIMEOUT_S:
                raise XpError(
                    f"no progress for {STALL_TIMEOUT_S:.0f}s ({done:,} of {sent:,} accounted); "
                    f"see {settings.data_dir / 'broker.log'}"
                )
    finally:
        if not feeder.done():
            feeder.cancel()
    progress.finish(worker.accounted, f"rejected {worker.counts['rejected']:,}")
    return sent


def check_or_exit(worker: Worker) -> None:
    """Raise when part of the worker died; exit the process at once when it is stuck.

    A stuck worker cannot stop cleanly: its hung write holds the shutdown (and
    the interpreter's exit) forever. Exiting now is as safe as a crash, which
    the changelog and committed offsets are built for; child processes die
    with this one (PDEATHSIG).
    """
    try:
        worker.check_health()
    except WorkerStuck as exc:
        log.critical("%s", exc)
        logging.shutdown()
        os._exit(STUCK_EXIT_CODE)


async def run_worker(settings: Settings, *, until_idle: bool) -> Worker:
    """The long-running worker; with `until_idle` it stops once everything is applied.

    SIGTERM, what orchestrators send, stops it the way Ctrl-C does: the batches
    applied are stored and committed and the worker leaves its group, so the
    others take its partitions at once instead of after the session timeout.
    """
    terminated = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminated.set)
    client = open_clickhouse(settings)
    with kafka(settings) as bootstrap:
        if settings.kafka_bootstrap is None:
            log.warning("embedded broker at %s (set XP_KAFKA_BOOTSTRAP for real Kafka)", bootstrap)
        await ensure_topics(bootstrap, settings)
        worker = Worker(settings, bootstrap, client)
        alerts = Alerting(settings, client, worker)
        ConsumerHealth(settings, bootstrap, worker)
        await worker.start()
        try:
            idle_checks = 0
            while not terminated.is_set():
                await asyncio.sleep(0.5)
                check_or_exit(worker)
                if until_idle:
                    idle_checks = idle_checks + 1 if await worker.idle() else 0
                    if idle_checks >= 3:
                        # Only here is the input complete; a SIGTERM's is not.
                        await alerts.finish()
                        break
        finally:
            await worker.stop()
    return worker
