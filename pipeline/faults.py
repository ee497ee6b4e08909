"""A fault switch for ClickHouse outage drills, in the sink's own client path.

chDB runs inside the worker, so an outage cannot be staged by stopping a
server. Instead, while the file named by `XP_SINK_FAULT_FILE` exists, every
table write of the sink fails with the error clickhouse-connect raises when a
server is unreachable, after the first table of a write went through: each
failed write is a half-done one, which is what a real outage mid-flush leaves.
With `hang` in the file, writes block instead, like a call into a network
black hole, until the file is removed. Operators can run the same drill
against a real server.
"""

from __future__ import annotations

import time
from pathlib import Path

from clickhouse_connect.driver.exceptions import OperationalError

_POLL_S = 0.2


class FaultSwitch:
    """Checked before each table insert; costs one `stat` when a file is configured."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def check(self, tables_written: int) -> None:
        """Raise or block as the switch file says; the first table of a write passes."""
        if self.path is None or tables_written == 0:
            return
        try:
            mode = self.path.read_text().strip()
        except FileNotFoundError:
            return
        if mode == "hang":
            while self.path.exists():
                time.sleep(_POLL_S)
            return
        raise OperationalError(f"ClickHouse unreachable (fault switch {self.path} is on)")
