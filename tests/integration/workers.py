"""Driving `xp worker` processes against one broker: input, group progress, /metrics.

The reliability tests (crash, outage, watchdog) start real worker processes and
judge them from outside, the way an operator or an orchestrator would.
"""

from __future__ import annotations

import asyncio
import sys
import urllib.request
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from pipeline.config import Settings
from pipeline.ingest import file_lines, produce
from pipeline.topics import ensure_topics

XP = Path(sys.executable).parent / "xp"


async def _produce(bootstrap: str, corpus: Path) -> int:
    settings = Settings(kafka_bootstrap=bootstrap)
    await ensure_topics(bootstrap, settings)
    sent = 0
    async for count in produce(bootstrap, settings.touchpoints_topic, file_lines(corpus)):
        sent = count
    return sent


def produce_corpus(bootstrap: str, corpus: Path) -> int:
    """Put every line of `corpus` on the touchpoints topic; the number of lines sent."""
    return asyncio.run(_produce(bootstrap, corpus))


async def _progress(bootstrap: str) -> tuple[int, int]:
    settings = Settings(kafka_bootstrap=bootstrap)
    view = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=settings.app_id)
    await view.start()
    try:
        tps = [TopicPartition(settings.batches_topic, p) for p in range(settings.partitions)]
        ends = await view.end_offsets(tps)
        return sum([await view.committed(tp) or 0 for tp in tps]), sum(ends.values())
    finally:
        await view.stop()


def batch_progress(bootstrap: str) -> tuple[int, int]:
    """Batches the Faust group has committed, and batches there are so far."""
    return asyncio.run(_progress(bootstrap))


def scrape(port: int) -> dict[str, float]:
    """A worker's /metrics as `name{labels}` -> value (empty while it is not serving)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples
