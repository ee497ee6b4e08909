"""The worker's health check: a dead part makes the process exit instead of hanging."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from clickhouse_connect.driver.client import Client

from pipeline.config import Settings
from pipeline.errors import WorkerStuck
from pipeline.worker import Worker


async def test_a_crashed_faust_app_makes_the_worker_exit(tmp_path: Path) -> None:
    # No broker and no ClickHouse: the check reads only the worker's own state.
    worker = Worker(Settings(data_dir=tmp_path), "127.0.0.1:1", cast(Client, None))
    worker.check_health()
    # What mode does to the app when one of its services, such as Faust's fetcher, crashes.
    worker.app._crash(KeyError("xp-batches 0"))
    with pytest.raises(WorkerStuck, match="Faust crashed: KeyError"):
        worker.check_health()
