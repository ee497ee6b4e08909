"""The bulk stage's processes start when the worker joins its group, which may never happen."""

from __future__ import annotations

from pipeline.bulk import BulkProcesses
from pipeline.config import Settings


def test_bulk_processes_never_started_stop_and_report_nothing() -> None:
    """A worker stopped before its first assignment stops bulk processes that never ran."""
    processes = BulkProcesses(Settings(bulk_processes=2), "127.0.0.1:9")
    processes.stop()
    assert not processes.started
    assert processes.failure() is None
    assert processes.peak_rss_mb() == 0.0


def test_bulk_processes_do_not_start_once_stopped() -> None:
    """An assignment that comes while the worker stops must not start processes it never stops."""
    processes = BulkProcesses(Settings(bulk_processes=1), "127.0.0.1:9")
    processes.stop()
    processes.start()
    assert not processes.started
    assert all(process.pid is None for process in processes.processes)
