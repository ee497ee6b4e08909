"""`xp soak`: is a worker's memory flat while customers keep coming and going?

Per-customer state expires (journeys, tickets and links after `XP_JOURNEY_TTL_S` of
inactivity, seen ids when their window closes: docs/semantics.md §3-4), so after a warm-up
a long-running worker should hold about as much as it did an hour before. This runs the
embedded pipeline as `xp worker` does (worker, alerting, consumer health) for a bounded
time and feeds it simulated customers who arrive at a steady rate, run their journeys and
leave, over days of event time. A feeder process of its own produces them, so that its
memory is not the worker's. Every few seconds it samples the worker process's RSS and the
size of its state; the report compares how RSS moves in the first and second half after
the warm-up.

Embedded, the worker's process also hosts ClickHouse (chDB), whose memory grows with the
data stored whatever the worker keeps; `discard_rows` swaps the sink for one that stores
nothing, which leaves the worker's own memory (a production worker writes to a ClickHouse
server of its own).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline import clickhouse
from pipeline.alerting import Alerting
from pipeline.clickhouse import Rows, Sink
from pipeline.config import Settings
from pipeline.embedded import kafka
from pipeline.errors import ConfigurationError, XpError
from pipeline.health import ConsumerHealth
from pipeline.ingest import paced, produce
from pipeline.memory import resident
from pipeline.progress import Progress
from pipeline.runner import open_clickhouse
from pipeline.simulate import SimulationConfig, encode, simulate
from pipeline.topics import ensure_topics
from pipeline.worker import Worker

#: The simulator makes about 12.6 events per customer; planning with fewer makes the
#: simulated span longer than a soak gets through.
EVENTS_PER_CUSTOMER = 10
#: After twice the TTL every journey in the state began during the soak: it is warm.
WARM_TTLS = 2
#: Growth of RSS over the second half after warm-up that still counts as flat:
#: the allocator and chDB's caches move by a few MB whatever the state does.
FLAT_MB = 16.0
FLAT_SHARE = 0.03


@dataclass(frozen=True)
class Sample:
    """One look at the worker: wall seconds, event hours covered, events, RSS, state sizes."""

    wall_s: float
    event_h: float
    events: int
    rss_mb: float
    journeys: int
    tickets: int
    linked: int
    seen: int
    windows: int


class DiscardingSink(Sink):
    """Stores nothing: the worker's memory without the embedded ClickHouse's."""

    def write(self, rows: Rows) -> None:
        return


@dataclass
class SoakResult:
    journey_ttl_s: int
    rate: float
    arrivals_per_hour: int
    discard_rows: bool
    samples: list[Sample] = field(default_factory=list)

    @property
    def warm_h(self) -> float:
        return WARM_TTLS * self.journey_ttl_s / 3600

    def halves(self) -> tuple[list[Sample], list[Sample]]:
        """The samples after the warm-up, split in two at the middle of their event time."""
        warm = [s for s in self.samples if s.event_h >= self.warm_h]
        if len(warm) < 4:
            return [], []
        middle = (warm[0].event_h + warm[-1].event_h) / 2
        return [s for s in warm if s.event_h <= middle], [s for s in warm if s.event_h >= middle]

    def verdict(self) -> dict[str, Any]:
        """RSS growth and slope in each half after the warm-up, and whether it is flat."""
        first, second = self.halves()
        if not second:
            return {"flat": None, "why": "too short: the soak never got past the warm-up"}
        grew = second[-1].rss_mb - second[0].rss_mb
        limit = max(FLAT_MB, FLAT_SHARE * second[0].rss_mb)
        return {
            "flat": grew <= limit,
            "first_half_mb": round(first[-1].rss_mb - first[0].rss_mb, 1),
            "second_half_mb": round(grew, 1),
            "limit_mb": round(limit, 1),
            "first_half_mb_per_h": _slope(first),
            "second_half_mb_per_h": _slope(second),
            "journeys_warm": second[0].journeys,
            "journeys_end": second[-1].journeys,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "journey_ttl_s": self.journey_ttl_s,
            "rate": self.rate,
            "arrivals_per_hour": self.arrivals_per_hour,
            "discard_rows": self.discard_rows,
            "warm_h": self.warm_h,
            "verdict": self.verdict(),
            "samples": [asdict(s) for s in self.samples],
        }


def _slope(samples: Sequence[Sample]) -> float | None:
    """Least-squares MB of RSS per hour of event time."""
    if len(samples) < 2 or samples[0].event_h == samples[-1].event_h:
        return None
    fit = statistics.linear_regression([s.event_h for s in samples], [s.rss_mb for s in samples])
    return round(fit.slope, 2)


async def run_soak(
    settings: Settings,
    *,
    seconds: float,
    rate: float,
    arrivals_per_hour: int,
    discard_rows: bool = False,
    sample_s: float = 2.0,
    seed: int = 7,
) -> SoakResult:
    """Feed churning customers for `seconds` and sample the worker every `sample_s`."""
    if rate <= 0 or arrivals_per_hour <= 0:
        raise ConfigurationError("a soak needs a positive rate and arrivals per hour")
    result = SoakResult(settings.journey_ttl_s, rate, arrivals_per_hour, discard_rows)
    client = open_clickhouse(settings)
    if settings.kafka_bootstrap is None:
        clickhouse.reset(client)  # the embedded broker starts empty: so must the tables
    span_h = math.ceil(seconds * rate / (arrivals_per_hour * EVENTS_PER_CUSTOMER)) + 1
    began = datetime.now(UTC) - timedelta(hours=span_h)
    config = SimulationConfig(
        customers=arrivals_per_hour * span_h, duration_s=span_h * 3600, seed=seed, start=began
    )
    with kafka(settings) as bootstrap:
        await ensure_topics(bootstrap, settings)
        worker = Worker(settings, bootstrap, client)
        if discard_rows:
            worker.sink = DiscardingSink(client)
        Alerting(settings, client, worker)
        ConsumerHealth(settings, bootstrap, worker)
        await worker.start()
        feeder = _start_feeder(bootstrap, settings.touchpoints_topic, config, rate)
        progress = Progress("soak", None)
        started = time.monotonic()
        began_ms = int(began.timestamp() * 1000)
        try:
            while time.monotonic() - started < seconds:
                await asyncio.sleep(sample_s)
                worker.check_health()
                if not feeder.is_alive() and feeder.exitcode:
                    raise XpError(f"the soak's feeder failed (exit {feeder.exitcode})")
                sample = _sample(worker, time.monotonic() - started, began_ms)
                result.samples.append(sample)
                progress.update(
                    sample.events,
                    f"{sample.event_h:.1f} h of event time  RSS {sample.rss_mb:,.0f} MB  "
                    f"{sample.journeys:,} journeys",
                )
        finally:
            feeder.terminate()
            feeder.join()
            await worker.stop()
        progress.finish(worker.accounted)
    return result


def _sample(worker: Worker, wall_s: float, began_ms: int) -> Sample:
    states = list(worker.states.values())
    watermark = max((s.watermark.max_ms or began_ms for s in states), default=began_ms)
    return Sample(
        wall_s=round(wall_s, 1),
        event_h=round((watermark - began_ms) / 3_600_000, 3),
        events=worker.accounted,
        rss_mb=round(resident().total_mb, 1),
        journeys=sum(len(s.journeys) for s in states),
        tickets=sum(len(j.tickets) for s in states for j in s.journeys.values()),
        linked=sum(len(s.linked) for s in states),
        seen=sum(len(s.seen) for s in states),
        windows=sum(len(s.windows) for s in states),
    )


def _start_feeder(
    bootstrap: str, topic: str, config: SimulationConfig, rate: float
) -> multiprocessing.process.BaseProcess:
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_feed, args=(bootstrap, topic, config, rate), daemon=True)
    process.start()
    return process


def _feed(bootstrap: str, topic: str, config: SimulationConfig, rate: float) -> None:
    """Runs in the feeder process: the simulated events at `rate`, until stopped."""

    async def run() -> None:
        lines = (encode(event) for event in simulate(config))
        async for _ in produce(bootstrap, topic, paced(lines, rate)):
            pass

    asyncio.run(run())


def report(result: SoakResult) -> str:
    """A table of samples (about twenty rows) and the verdict, for people."""
    rows = result.samples
    step = max(1, len(rows) // 20)
    shown = rows[::step] + ([rows[-1]] if rows and (len(rows) - 1) % step else [])
    lines = [
        f"xp soak: {result.arrivals_per_hour:,} new customers per event hour at "
        f"{result.rate:,.0f} events/s, journey TTL {result.journey_ttl_s:,} s "
        f"(warm after {result.warm_h:g} h of event time)"
        + (", rows discarded" if result.discard_rows else ""),
        f"{'wall s':>7} {'event h':>8} {'events':>10} {'RSS MB':>7} {'journeys':>9} "
        f"{'tickets':>8} {'linked':>7} {'seen':>7} {'windows':>8}",
    ]
    lines += [
        f"{s.wall_s:7.0f} {s.event_h:8.1f} {s.events:10,} {s.rss_mb:7.0f} {s.journeys:9,} "
        f"{s.tickets:8,} {s.linked:7,} {s.seen:7,} {s.windows:8,}"
        for s in shown
    ]
    verdict = result.verdict()
    if verdict["flat"] is None:
        lines.append(verdict["why"])
    else:
        lines.append(
            f"after warm-up, RSS moved {verdict['first_half_mb']:+.1f} MB in the first half "
            f"({verdict['first_half_mb_per_h']} MB per event hour) and "
            f"{verdict['second_half_mb']:+.1f} MB in the second "
            f"({verdict['second_half_mb_per_h']} MB per event hour); journeys "
            f"{verdict['journeys_warm']:,} -> {verdict['journeys_end']:,}: "
            + ("flat" if verdict["flat"] else f"GROWING (more than {verdict['limit_mb']} MB)")
        )
        if not verdict["flat"] and not result.discard_rows:
            lines.append(
                "RSS includes an embedded ClickHouse (chDB), which grows with the data stored: "
                "--discard-rows measures the worker alone"
            )
    return "\n".join(lines)
