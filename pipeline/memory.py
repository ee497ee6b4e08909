"""This process's resident memory, split the way a memory floor has to be read.

Resident memory counts the pages of mapped files too, and the worker maps
chDB's 555 MB library: how much of it is resident follows the page cache,
not the pipeline. Measured here, the same worker read 630 MB in one checkout
and 790 MB in a fresh clone whose library had just been written, with the
same anonymous memory. The anonymous part (heaps and stacks, chDB's
included) is what the process allocated.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import NamedTuple


class Resident(NamedTuple):
    total_mb: float
    anonymous_mb: float


def resident() -> Resident:
    """Resident memory of this process now, from /proc."""
    fields: dict[str, float] = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon"):
                fields[name] = int(value.split()[0]) / 1024
    return Resident(fields["VmRSS"], fields["RssAnon"])


#: A sample of resident memory, and how many events were stored when it was taken.
Sample = tuple[int, Resident]


def median_between(samples: Sequence[Sample], lo: int, hi: int) -> Resident:
    """The median memory of the samples taken while `lo` to `hi` events were stored.

    One sample of the benchmark's worker swings by ±40 MB (chDB's merges,
    batches in flight), so two single samples can show growth that is not
    there; a window's median does not. Without a sample in the window, the
    one taken nearest its middle.
    """
    inside = [memory for stored, memory in samples if lo <= stored <= hi]
    if not inside:
        middle = (lo + hi) / 2
        inside = [min(samples, key=lambda sample: abs(sample[0] - middle))[1]]
    return Resident(
        statistics.median(memory.total_mb for memory in inside),
        statistics.median(memory.anonymous_mb for memory in inside),
    )
