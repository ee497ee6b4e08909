"""SIGKILL the worker mid-stream, restart it, and every stored number is still exact.

Kafka redelivers what a killed worker had not committed, in both stages: the bulk
stage writes some batches twice and the Faust agent sees some batches again. Exactness
rests on the state remembering the source offsets it applied and on rows that replace.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.config import Settings
from pipeline.embedded import broker
from pipeline.ingest import file_lines, produce
from pipeline.topics import ensure_topics
from tests.corpus import make_corpus
from tests.integration.exactness import SETTINGS, problems_against
from tests.oracle import expected

pytestmark = pytest.mark.integration

XP = Path(sys.executable).parent / "xp"
LINES = 16_000
KILLS = 3


async def _produce(bootstrap: str, corpus: Path) -> int:
    settings = Settings(kafka_bootstrap=bootstrap)
    await ensure_topics(bootstrap, settings)
    sent = 0
    async for count in produce(bootstrap, settings.touchpoints_topic, file_lines(corpus)):
        sent = count
    return sent


async def _progress(bootstrap: str) -> tuple[int, int]:
    """Batches the Faust group has committed, and batches there are so far."""
    settings = Settings(kafka_bootstrap=bootstrap)
    view = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=settings.app_id)
    await view.start()
    try:
        tps = [TopicPartition(settings.batches_topic, p) for p in range(settings.partitions)]
        ends = await view.end_offsets(tps)
        return sum([await view.committed(tp) or 0 for tp in tps]), sum(ends.values())
    finally:
        await view.stop()


def _kill_after_progress(
    proc: subprocess.Popen[bytes], bootstrap: str, since: int, pause: float
) -> int:
    """SIGKILL once this worker committed something, `pause` seconds later: mid-stream."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the worker exited before it was killed"
        committed, _ = asyncio.run(_progress(bootstrap))
        if committed > since:
            time.sleep(pause)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            committed, end = asyncio.run(_progress(bootstrap))
            assert committed < end, "the worker finished before the kill: use a larger corpus"
            return committed
        time.sleep(0.05)
    raise AssertionError("the worker committed nothing in 120 s")


def test_sigkilled_worker_restarts_with_every_number_exact(tmp_path: Path) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    corpus = tmp_path / "corpus.jsonl"
    make_corpus(corpus, lines=LINES, seed=4242, start=start)
    want = expected(corpus)
    data_dir = tmp_path / "data"
    rng = random.Random(4242)

    with broker(tmp_path / "broker") as bootstrap:
        assert asyncio.run(_produce(bootstrap, corpus)) == LINES
        env = {
            **os.environ,
            **SETTINGS,
            "XP_KAFKA_BOOTSTRAP": bootstrap,
            # Small batches and frequent snapshots: many places for a
            # kill to land, and a worker slow enough to be caught mid-stream.
            "XP_BATCH_MAX_EVENTS": "100",
            "XP_SNAPSHOT_EVERY_BATCHES": "5",
        }
        worker = [str(XP), "worker", "--data-dir", str(data_dir)]
        killed_at = [0]
        for _ in range(KILLS):
            proc = subprocess.Popen(worker, env=env, stderr=subprocess.DEVNULL)
            pause = rng.uniform(0.2, 1.2)
            killed_at.append(_kill_after_progress(proc, bootstrap, killed_at[-1], pause))
        final = subprocess.run(
            [*worker, "--until-idle", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert final.returncode == 0, final.stderr[-3000:]
    counts = json.loads(final.stdout.strip().splitlines()[-1])
    # The last worker re-read what its killed predecessor had applied but not committed.
    assert counts["replayed"] > 0, counts

    problems = problems_against(data_dir, want)
    assert not problems, f"killed at {killed_at}\n" + "\n\n".join(problems)
