"""Event-time windows: the watermark, lateness and one partition's window aggregates.

Pure logic. A window's aggregate is the whole state of that (minute, channel,
stage) on one partition, so the row written from it replaces the previous one
instead of adding to it (docs/relations.md, "Why partial rows").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

WINDOW_S = 60

#: Experience counters in storage column order (docs/relations.md).
EXPERIENCE_COLUMNS: tuple[str, ...] = (
    "csat_responses",
    "csat_satisfied",
    "nps_responses",
    "nps_promoters",
    "nps_detractors",
    "ces_responses",
    "ces_sum",
    "errors",
    "crashes",
    "sessions",
    "crash_sessions",
    "first_responses",
    "first_response_ms_sum",
    "resolutions",
    "resolution_ms_sum",
    "reopens",
    "lcp_count",
    "lcp_good",
    "inp_count",
    "inp_good",
    "cls_count",
    "cls_good",
    "fcp_count",
    "fcp_good",
    "ttfb_count",
    "ttfb_good",
)
X = {name: i for i, name in enumerate(EXPERIENCE_COLUMNS)}

#: Good thresholds per web vital (Google's; ms, except CLS which is unitless).
VITAL_GOOD: dict[str, float] = {"LCP": 2500, "INP": 200, "CLS": 0.1, "FCP": 1800, "TTFB": 800}

WindowKey = tuple[int, str, str]


def window_start(occurred_ms: int) -> int:
    """Epoch seconds of the minute containing the event."""
    return occurred_ms // 1000 // WINDOW_S * WINDOW_S


@dataclass(slots=True)
class Aggregate:
    """One window's counts on one partition; `customers` is exact, hence a set."""

    events: int = 0
    entries: int = 0
    conversions: int = 0
    customers: set[str] = field(default_factory=set)
    experience: list[int] = field(default_factory=lambda: [0] * len(EXPERIENCE_COLUMNS))

    def to_list(self, members: Iterable[str]) -> list[Any]:
        """The counts with `members`: all customers in a snapshot, the new ones in a delta.

        A delta that carried the whole set would grow with the window and be
        re-sorted on every batch; the counts are small and always complete.
        """
        return [
            self.events,
            self.entries,
            self.conversions,
            list(members),
            list(self.experience),
        ]

    def restore(self, data: list[Any]) -> None:
        """Take stored counts and add the stored members (the inverse of `to_list`)."""
        self.events, self.entries, self.conversions, members, experience = data
        self.customers.update(members)
        self.experience = list(experience)

    @property
    def has_experience(self) -> bool:
        return any(self.experience)


@dataclass(slots=True)
class Watermark:
    """The latest event time a partition accepted, and what it closes."""

    lateness_s: int
    max_ms: int | None = None

    def closed(self, window_s: int) -> bool:
        """A closed window takes no more events: they are rejected as too_late."""
        return (
            self.max_ms is not None
            and self.max_ms >= (window_s + WINDOW_S + self.lateness_s) * 1000
        )

    def advance(self, occurred_ms: int) -> None:
        if self.max_ms is None or occurred_ms > self.max_ms:
            self.max_ms = occurred_ms
