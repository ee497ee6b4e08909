"""Fixtures shared by the whole test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from pipeline import clickhouse
from tests.traffic import Processed, process_traffic


@pytest.fixture(scope="session")
def chdb_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one data directory of every in-process chDB use in the session.

    chDB hosts a single engine per process, so anything that runs the pipeline
    in this process must be given this directory; tests keep apart by using
    keys (ids, channels, topics) of their own, never by emptying tables.
    """
    return tmp_path_factory.mktemp("xp-data")


@pytest.fixture(scope="session")
def chdb_client(chdb_data_dir: Path) -> Client:
    """chDB with the schema migrated."""
    client = clickhouse.connect(None, chdb_data_dir)
    clickhouse.migrate(client)
    return client


@pytest.fixture(scope="session")
def simulated_traffic(tmp_path_factory: pytest.TempPathFactory) -> Processed:
    """Simulated traffic that changes near its end, processed once for the whole session.

    It lives in a data directory of its own: read it through subprocesses.
    """
    return process_traffic(tmp_path_factory.mktemp("simulated"))
