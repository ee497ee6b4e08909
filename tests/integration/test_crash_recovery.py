"""SIGKILL the worker mid-stream, restart it, and every stored number is still exact.

Kafka redelivers what a killed worker had not committed, in both stages: the bulk
stage writes some batches twice and the Faust agent sees some batches again. Exactness
rests on the state remembering the source offsets it applied and on rows that replace.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.embedded import broker
from tests.corpus import make_corpus
from tests.integration.exactness import SETTINGS, XP, oracle, problems_against
from tests.integration.workers import batch_progress, finish_with_restarts, produce_corpus

pytestmark = pytest.mark.integration

LINES = 16_000
KILLS = 3


def _kill_after_progress(
    proc: subprocess.Popen[bytes], bootstrap: str, since: int, share: float, pause: float
) -> int:
    """SIGKILL once this worker committed past `share` of the batches, `pause` s later.

    Aimed by progress, not by time: a worker fast enough to finish the corpus
    inside a fixed pause would never be killed mid-stream.
    """
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the worker exited before it was killed"
        committed, end = batch_progress(bootstrap)
        if committed > since and committed >= share * end:
            time.sleep(pause)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            committed, end = batch_progress(bootstrap)
            assert committed < end, "the worker finished before the kill: use a larger corpus"
            return committed
        time.sleep(0.02)
    raise AssertionError("the worker committed nothing in 120 s")


@pytest.mark.parametrize("seed", [4242, pytest.param(9090, marks=pytest.mark.slow)])
def test_sigkilled_worker_restarts_with_every_number_exact(tmp_path: Path, seed: int) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    corpus = tmp_path / "corpus.jsonl"
    make_corpus(corpus, lines=LINES, seed=seed, start=start)
    want = oracle(corpus)
    data_dir = tmp_path / "data"
    rng = random.Random(seed)

    with broker(tmp_path / "broker") as bootstrap:
        assert produce_corpus(bootstrap, corpus) == LINES
        env = {
            **os.environ,
            **SETTINGS,
            "XP_KAFKA_BOOTSTRAP": bootstrap,
            # Small batches and frequent snapshots: many places for a
            # kill to land, and a worker slow enough to be caught mid-stream.
            "XP_BATCH_MAX_EVENTS": "100",
            "XP_SNAPSHOT_EVERY_BATCHES": "5",
            # Progress seen often enough to aim the kills (Faust's default is 2.8 s).
            "XP_COMMIT_INTERVAL_S": "0.2",
            # One batch stored at a time: the worker trails its bulk stage, so a kill
            # lands with batches waiting and applied ones uncommitted, not with the
            # worker idle or already through the corpus.
            "XP_BATCHES_IN_FLIGHT": "1",
        }
        worker = [str(XP), "worker", "--data-dir", str(data_dir)]
        killed_at = [0]
        for share in sorted(rng.uniform(0.05, 0.75) for _ in range(KILLS)):
            proc = subprocess.Popen(worker, env=env, stderr=subprocess.DEVNULL)
            pause = rng.uniform(0.0, 0.1)
            killed_at.append(_kill_after_progress(proc, bootstrap, killed_at[-1], share, pause))
        codes, out = finish_with_restarts(worker, env, tmp_path)
        assert codes[-1] == 0, f"exit codes {codes}"
    counts = json.loads(out.strip().splitlines()[-1])
    # The last worker re-read what its killed predecessor had applied but not
    # committed (unless a stuck restart before it did; see finish_with_restarts).
    assert counts["replayed"] > 0 or len(codes) > 1, counts

    problems = problems_against(data_dir, want)
    assert not problems, f"killed at {killed_at}\n" + "\n\n".join(problems)
