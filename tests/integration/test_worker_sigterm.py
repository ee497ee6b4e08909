"""`xp worker` stops on SIGTERM, as orchestrators stop it, the way it stops on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.embedded import broker
from tests.corpus import make_corpus
from tests.integration.exactness import SETTINGS, XP
from tests.integration.workers import batch_progress, produce_corpus

pytestmark = pytest.mark.integration

LINES = 2_000


def test_sigterm_stores_what_was_applied_and_reports(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    make_corpus(corpus, lines=LINES, seed=77, start=start)
    with broker(tmp_path / "broker") as bootstrap:
        assert produce_corpus(bootstrap, corpus) == LINES
        env = {**os.environ, **SETTINGS, "XP_KAFKA_BOOTSTRAP": bootstrap}
        workdir = tmp_path / "cwd"
        workdir.mkdir()
        proc = subprocess.Popen(
            [str(XP), "worker", "--data-dir", str(tmp_path / "data"), "--json"],
            env=env,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the worker committed nothing in 120 s"
            committed, end = batch_progress(bootstrap)
            if committed and committed >= end:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
    counts = json.loads(out.strip().splitlines()[-1])
    # Every line is accounted for: stored, a duplicate, or rejected with its reason.
    assert counts["stored"] + counts["duplicates"] + counts["rejected"] == LINES, counts
    # Everything it keeps is under --data-dir, Faust's own directory included.
    assert list(workdir.iterdir()) == []
