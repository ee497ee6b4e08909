"""ClickHouse fails for a while, or a write never returns: nothing is lost or doubled.

The fault switch (pipeline/faults.py) makes the sink's writes fail after the
first table of each write, so every failed write leaves half a batch stored:
the retry must collapse with it. A write that hangs must trip the watchdog,
which exits the worker mid-flush; the restarted worker must finish exactly.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.embedded import broker, free_port
from pipeline.runner import STUCK_EXIT_CODE
from tests.corpus import make_corpus
from tests.integration.exactness import SETTINGS, XP, oracle, problems_against
from tests.integration.workers import (
    batch_progress,
    finish_with_restarts,
    produce_corpus,
    scrape,
)
from tests.oracle import Expected

pytestmark = pytest.mark.integration

LINES = 10_000
WATCHDOG_S = 4
#: A little over Faust's commit interval (2.8 s).
COMMIT_EVERY_S = 3.5


def _wait_for(what: str, condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _corpus(tmp_path: Path, seed: int) -> tuple[Path, Expected]:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    corpus = tmp_path / "corpus.jsonl"
    make_corpus(corpus, lines=LINES, seed=seed, start=start)
    return corpus, oracle(corpus)


def _env(bootstrap: str, fault: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **SETTINGS,
        "XP_KAFKA_BOOTSTRAP": bootstrap,
        "XP_SINK_FAULT_FILE": str(fault),
        # Many small batches, so that the outage lands mid-stream.
        "XP_BATCH_MAX_EVENTS": "200",
        **extra,
    }


def test_clickhouse_outage_pauses_the_worker_and_it_catches_up_exactly(tmp_path: Path) -> None:
    corpus, want = _corpus(tmp_path, seed=515)
    fault, data_dir, log = tmp_path / "clickhouse-down", tmp_path / "data", tmp_path / "worker.log"
    port = free_port()
    with broker(tmp_path / "broker") as bootstrap:
        assert produce_corpus(bootstrap, corpus) == LINES
        command = [str(XP), "worker", "--data-dir", str(data_dir), "--until-idle"]
        with log.open("w") as stderr:
            proc = subprocess.Popen(
                [*command, "--metrics-port", str(port)],
                env=_env(bootstrap, fault, XP_COMMIT_INTERVAL_S="0.2"),
                stderr=stderr,
            )
            try:
                _wait_for("first commits", lambda: batch_progress(bootstrap)[0] > 0)
                fault.write_text("error")
                _wait_for(
                    "three failed writes on /metrics",
                    lambda: scrape(port).get("xp_sink_errors_total", 0) >= 3,
                )
                during = scrape(port)
                # Faust commits what was acked before the outage on its next tick.
                time.sleep(COMMIT_EVERY_S)
                committed, end = batch_progress(bootstrap)
                assert committed < end, "the run ended before the outage: use a larger corpus"
                time.sleep(COMMIT_EVERY_S)
                assert batch_progress(bootstrap)[0] == committed, "committed during the outage"
                fault.unlink()
                proc.wait(timeout=300)
            finally:
                proc.kill()
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert during["xp_sink_failing"] == 1
    # Seconds into the outage, the watchdog does not count it as time without progress.
    assert during["xp_agent_progress_age_seconds"] < 2, "the watchdog took the outage for a hang"
    text = log.read_text()
    assert "ClickHouse write failed" in text and "fault switch" in text
    assert "ClickHouse writes work again" in text
    problems = problems_against(data_dir, want)
    assert not problems, "\n\n".join(problems)


def test_a_hung_write_trips_the_watchdog_and_a_restart_finishes_exactly(tmp_path: Path) -> None:
    corpus, want = _corpus(tmp_path, seed=616)
    fault, data_dir, log = tmp_path / "clickhouse-hangs", tmp_path / "data", tmp_path / "worker.log"
    port = free_port()
    with broker(tmp_path / "broker") as bootstrap:
        assert produce_corpus(bootstrap, corpus) == LINES
        worker = [str(XP), "worker", "--data-dir", str(data_dir)]
        # Commits every 0.2 s: the hang starts at the first one, and with Faust's
        # 2.8 s the worker had applied the whole corpus by then.
        env = _env(bootstrap, fault, XP_WATCHDOG_S=str(WATCHDOG_S), XP_COMMIT_INTERVAL_S="0.2")
        with log.open("w") as stderr:
            proc = subprocess.Popen([*worker, "--metrics-port", str(port)], env=env, stderr=stderr)
            try:
                _wait_for("first commits", lambda: batch_progress(bootstrap)[0] > 0)
                fault.write_text("hang")
                ages = []
                started = time.monotonic()
                while proc.poll() is None and time.monotonic() - started < 60:
                    ages.append(scrape(port).get("xp_agent_progress_age_seconds", 0))
                    time.sleep(0.2)
                exited_after = time.monotonic() - started
            finally:
                proc.kill()
        assert proc.returncode == STUCK_EXIT_CODE, log.read_text()[-3000:]
        assert exited_after < WATCHDOG_S + 30, "the watchdog did not end the stuck worker"
        assert "watchdog: no batch applied" in log.read_text()
        assert max(ages) >= WATCHDOG_S / 2, ages
        fault.unlink()
        codes, _ = finish_with_restarts(worker, env, tmp_path)
    assert codes[-1] == 0, f"exit codes {codes}"
    problems = problems_against(data_dir, want)
    assert not problems, "\n\n".join(problems)
