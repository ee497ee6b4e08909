"""A dependency-free progress line on stderr, so stdout stays clean for `--json`."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Redraws one line on a terminal; elsewhere prints a line every few seconds."""

    def __init__(self, label: str, total: int | None, stream: TextIO = sys.stderr) -> None:
        self.label = label
        self.total = total
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self._last_line = 0.0

    def update(self, done: int, extra: str = "") -> None:
        now = time.monotonic()
        if not self.tty and now - self._last_line < 5:
            return
        self._last_line = now
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        if self.total:
            share = min(done / self.total, 1.0)
            filled = int(share * 30)
            bar = "█" * filled + "░" * (30 - filled)
            text = f"{self.label} {bar} {share:6.1%} {done:,}/{self.total:,}"
        else:
            text = f"{self.label} {done:,}"
        text += f"  {rate:,.0f}/s  {elapsed:5.1f}s"
        if extra:
            text += f"  {extra}"
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self, done: int, extra: str = "") -> None:
        self._last_line = 0.0
        self.update(done, extra)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
