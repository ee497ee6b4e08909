"""Driving `xp worker` processes against one broker: input, group progress, /metrics.

The reliability tests (crash, outage, watchdog) start real worker processes and
judge them from outside, the way an operator or an orchestrator would.
"""

from __future__ import annotations

import asyncio
import subprocess
import urllib.request
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from pipeline.config import Settings
from pipeline.ingest import file_lines, produce
from pipeline.offsets import LogEnds
from pipeline.runner import STUCK_EXIT_CODE
from pipeline.topics import ensure_topics

RESTARTS = 3
RESTART_WATCHDOG_S = 45


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
    tps = [TopicPartition(settings.batches_topic, p) for p in range(settings.partitions)]
    # Reads the group's offsets without joining it; committing on stop would fail.
    view = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=settings.app_id, enable_auto_commit=False
    )
    # Not the listed ends: the embedded broker lists them short (pipeline/offsets.py).
    ends = LogEnds(bootstrap, settings.fetch_max_wait_ms)
    await view.start()
    await ends.start()
    try:
        committed = sum([await view.committed(tp) or 0 for tp in tps])
        return committed, sum((await ends.of(tps)).values())
    finally:
        await ends.stop()
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


def finish_with_restarts(
    worker: list[str], env: dict[str, str], logs: Path
) -> tuple[list[int], str]:
    """Run `worker --until-idle --json` until it finishes, restarting it as an orchestrator would.

    A restarted worker was seen (about one run in three under heavy load) to
    get batches of only some of its partitions and then wait until the
    watchdog ended it. The worker now fetches such batches again itself
    (docs/reliability.md, "Batches fetched and never delivered"); a stall
    that this does not cover still ends in the watchdog, and the next start
    finishes. Returns the exit codes and the last run's output; each log is
    kept in `logs` for diagnosis.
    """
    codes: list[int] = []
    out = ""
    for attempt in range(RESTARTS):
        log = logs / f"restart-{attempt}.log"
        with log.open("w") as stderr:
            run = subprocess.run(
                [*worker, "--until-idle", "--json"],
                env={**env, "XP_WATCHDOG_S": str(RESTART_WATCHDOG_S)},
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                timeout=600,
            )
        codes.append(run.returncode)
        out = run.stdout
        if run.returncode != STUCK_EXIT_CODE:
            assert run.returncode == 0, _without_writes(log)
            break
    return codes, out


def _without_writes(log: Path) -> str:
    """A worker's log without the line per write, for a failure message."""
    return "".join(line for line in log.open() if "xp.sink: wrote" not in line)[-6000:]
