"""The benchmark's memory split: what the process allocates shows as anonymous memory."""

from __future__ import annotations

from pipeline.memory import resident


def test_allocated_memory_shows_as_anonymous_and_within_the_total() -> None:
    before = resident()
    block = bytearray(64 * 2**20)  # zero-filled, so every page is touched
    after = resident()
    assert after.anonymous_mb - before.anonymous_mb >= 60
    assert 0 < after.anonymous_mb <= after.total_mb
    del block
