"""The worker's health checks: a dead part makes the process exit instead of hanging, and
batches that never reach the agent are fetched again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

import pytest
from clickhouse_connect.driver.client import Client

from pipeline.config import Settings
from pipeline.errors import WorkerStuck
from pipeline.worker import _UNDELIVERED_S, Worker


async def test_a_crashed_faust_app_makes_the_worker_exit(tmp_path: Path) -> None:
    # No broker and no ClickHouse: the check reads only the worker's own state.
    worker = Worker(Settings(data_dir=tmp_path), "127.0.0.1:1", cast(Client, None))
    worker.check_health()
    # What mode does to the app when one of its services, such as Faust's fetcher, crashes.
    worker.app._crash(KeyError("xp-batches 0"))
    with pytest.raises(WorkerStuck, match="Faust crashed: KeyError"):
        worker.check_health()


def _idle_worker(tmp_path: Path, idle_s: float | None) -> tuple[Worker, list[tuple[int, int]]]:
    """A worker whose agent has waited `idle_s` (None: busy) while partition 0 has batches."""
    worker = Worker(Settings(data_dir=tmp_path), "127.0.0.1:1", cast(Client, None))
    seeks: list[tuple[int, int]] = []

    async def waiting() -> dict[int, int]:
        return {0: 3}

    async def next_batch(partition: int) -> int:
        return 7

    async def seek(partition: int, offset: int) -> None:
        seeks.append((partition, offset))
        worker._rewound[partition] = (offset, time.monotonic())

    worker._batches_waiting = waiting  # type: ignore[method-assign]
    worker._next_batch = next_batch  # type: ignore[method-assign]
    worker._seek = seek  # type: ignore[method-assign]
    worker._idle_since = None if idle_s is None else time.monotonic() - idle_s
    return worker, seeks


async def test_batches_that_never_reach_an_idle_agent_are_fetched_again(tmp_path: Path) -> None:
    worker, seeks = _idle_worker(tmp_path, idle_s=_UNDELIVERED_S + 1)
    await worker._watch()
    assert seeks == [(0, 7)]
    # `_rewind_again` repeats a seek that did not help; the watchdog does not pile up more.
    await worker._watch()
    assert seeks == [(0, 7)]


@pytest.mark.parametrize("idle_s", [None, _UNDELIVERED_S - 1])
async def test_a_busy_or_briefly_idle_agent_gets_no_refetch(
    tmp_path: Path, idle_s: float | None
) -> None:
    # Busy: storing into a slow ClickHouse, its batches wait in Faust's buffer.
    worker, seeks = _idle_worker(tmp_path, idle_s)
    await worker._watch()
    assert seeks == []
