"""This process's resident memory, split the way a memory floor has to be read.

Resident memory counts the pages of mapped files too, and the worker maps
chDB's 555 MB library: how much of it is resident follows the page cache,
not the pipeline. Measured here, the same worker read 630 MB in one checkout
and 790 MB in a fresh clone whose library had just been written, with the
same anonymous memory. The anonymous part (heaps and stacks, chDB's
included) is what the process allocated.
"""

from __future__ import annotations

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
