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
LINES = 12_000
KILLS = 3


async def _produce(bootstrap: str, corpus: Path) -> int:
    settings = Settings(kafka_bootstrap=bootstrap)
    await ensure_topics(bootstrap, settings)
    sent = 0
    async for count in produce(bootstrap, settings.touchpoints_topic, file_lines(corpus)):
        sent = count
    return sent


async def _bulk_progress(bootstrap: str) -> int:
    """Touchpoints the bulk stage has committed: how far the worker got."""
    settings = Settings(kafka_bootstrap=bootstrap)
    view = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"{settings.app_id}-bulk")
    await view.start()
    try:
        tps = [TopicPartition(settings.touchpoints_topic, p) for p in range(settings.partitions)]
        return sum([await view.committed(tp) or 0 for tp in tps])
    finally:
        await view.stop()


def _kill_when(proc: subprocess.Popen[bytes], bootstrap: str, target: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the worker exited before it was killed"
        done = asyncio.run(_bulk_progress(bootstrap))
        if done >= target:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return done
        time.sleep(0.05)
    raise AssertionError(f"worker made no progress to {target} in {timeout}s")


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
            # Small batches and frequent snapshots: many places for a kill to land.
            "XP_BATCH_MAX_EVENTS": "150",
            "XP_SNAPSHOT_EVERY_BATCHES": "5",
        }
        worker = [str(XP), "worker", "--data-dir", str(data_dir)]
        killed_at = []
        for k in range(KILLS):
            target = int(LINES * (k + rng.uniform(0.3, 0.9)) / (KILLS + 1))
            proc = subprocess.Popen(worker, env=env, stderr=subprocess.DEVNULL)
            killed_at.append(_kill_when(proc, bootstrap, target, timeout=120))
        assert killed_at == sorted(killed_at) and killed_at[-1] < LINES, killed_at
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
