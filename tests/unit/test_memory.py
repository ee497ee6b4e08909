"""The benchmark's memory split: what the process allocates shows as anonymous memory."""

from __future__ import annotations

from pipeline.memory import Resident, median_between, resident


def test_allocated_memory_shows_as_anonymous_and_within_the_total() -> None:
    before = resident()
    block = bytearray(64 * 2**20)  # zero-filled, so every page is touched
    after = resident()
    assert after.anonymous_mb - before.anonymous_mb >= 60
    assert 0 < after.anonymous_mb <= after.total_mb
    del block


def test_a_windows_median_ignores_a_single_swing() -> None:
    samples = [(n * 1000, Resident(600.0 + n, 300.0 + n)) for n in range(10)]
    samples[5] = (5000, Resident(900.0, 600.0))  # a merge's transient
    assert median_between(samples, 4000, 6000) == Resident(606.0, 306.0)


def test_a_window_without_samples_takes_the_one_nearest_its_middle() -> None:
    samples = [(0, Resident(500.0, 200.0)), (9000, Resident(700.0, 400.0))]
    assert median_between(samples, 6000, 8000) == Resident(700.0, 400.0)
    assert median_between(samples, 1000, 3000) == Resident(500.0, 200.0)
