"""A worker's state stays bounded however many customers pass through it (issue #6).

Two days of simulated traffic in which every customer is new (people arrive, run their
journey and leave) go through the pure stages with a two-hour journey TTL. Without expiry
the journeys would grow with every arrival; with it, journeys, tickets, links, seen ids and
windows level off after the warm-up and stay there. Counts of the pure state, not RSS:
they do not depend on the allocator or on what else the machine runs (`xp soak` measures
the memory of the real worker).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest

from pipeline.config import Settings
from pipeline.simulate import SimulationConfig, simulate
from tests.pure_pipeline import PurePipeline

pytestmark = pytest.mark.slow

HOUR_MS = 3_600_000
SPAN_H = 48
TTL_S = 2 * 3600
#: Past twice the TTL every journey alive began after the start: the state is warm.
WARM_H = 2 * TTL_S / 3600
START = datetime(2025, 3, 1, tzinfo=UTC)


def lines(config: SimulationConfig, identities: set[str]) -> Iterator[bytes]:
    """The simulated events as `xp process` lines, received when they happened."""
    for event in simulate(config):
        identities.add(event.get("customer_id") or event["anonymous_id"])
        event["received_at"] = event["occurred_at"]
        yield orjson.dumps(event)


def test_state_levels_off_while_customers_keep_arriving() -> None:
    config = SimulationConfig(
        customers=16_000, duration_s=SPAN_H * 3600, seed=5, start=START, warmup_s=0
    )
    pipeline = PurePipeline(Settings(partitions=4, journey_ttl_s=TTL_S))
    identities: set[str] = set()
    source = lines(config, identities)
    samples: list[dict[str, int]] = []
    start_ms = int(START.timestamp() * 1000)
    while chunk := list(itertools.islice(source, 5000)):
        pipeline.feed(chunk)
        states = pipeline.states.values()
        hours = (max(s.watermark.max_ms or start_ms for s in states) - start_ms) / HOUR_MS
        if hours >= WARM_H:
            samples.append(
                {
                    "journeys": sum(len(s.journeys) for s in states),
                    "tickets": sum(len(j.tickets) for s in states for j in s.journeys.values()),
                    "linked": sum(len(s.linked) for s in states),
                    "seen": sum(len(s.seen) for s in states),
                    "windows": sum(len(s.windows) for s in states),
                }
            )

    assert len(samples) >= 30
    third = len(samples) // 3
    for name in samples[0]:
        series = [sample[name] for sample in samples]
        typical = statistics.median(series)
        early = statistics.mean(series[:third])
        late = statistics.mean(series[-third:])
        assert typical > 0, name
        assert max(series) <= 1.6 * typical, (name, series)
        assert late <= 1.25 * early, (name, early, late)
    # What expiry saves: every identity ever seen would otherwise still be there.
    assert len(identities) >= 10 * statistics.median(s["journeys"] for s in samples)
