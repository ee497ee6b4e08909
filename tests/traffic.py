"""Simulated traffic that changes near its end, for the dashboard, report and screenshot tests.

The first 75 minutes are ordinary; in the last 25 far fewer people sign up or
finish a purchase, and support answers four times slower and reopens half the
tickets. So the report has something to say under "what changed", and every
panel has data. A few malformed lines and a duplicate give the pipeline-health
panels rows too.

The simulator has no notion of a change over time, so the two parts are two
simulations; the second warms up for an hour before its first event, so that
its people are as far along their journeys as the first part's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.simulate import Behavior, SimulationConfig, encode, simulate

STEADY_MINUTES = 75
CHANGED_MINUTES = 25
#: Arrivals per minute, the same in both parts so that volume does not change.
ARRIVALS_PER_MINUTE = 16
WARMUP_MINUTES = 60
#: More buyers contact support than by default, so that scores have volume to compare.
STEADY = replace(Behavior(), ticket_p=0.3)
CHANGED = replace(
    STEADY,
    checkout_p=0.3,
    purchase_p=0.35,
    signup_p=0.02,
    app_signup_p=0.1,
    ticket_p=0.6,
    first_response_s=600.0,
    reopen_p=0.5,
)
BAD_LINES = (b"{not json", b"[1, 2]", b'{"source": "web", "type": "page_view"}')


@dataclass(frozen=True)
class Traffic:
    path: Path
    start: datetime
    lines: int


def write_traffic(path: Path, seed: int = 11) -> Traffic:
    """Write the JSONL file; event times end about now, so no lateness check rejects them."""
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(minutes=STEADY_MINUTES + CHANGED_MINUTES)
    cut = start + timedelta(minutes=STEADY_MINUTES)
    parts = (
        SimulationConfig(
            customers=ARRIVALS_PER_MINUTE * (STEADY_MINUTES + WARMUP_MINUTES),
            duration_s=STEADY_MINUTES * 60,
            start=start,
            seed=seed,
            warmup_s=WARMUP_MINUTES * 60,
            behavior=STEADY,
        ),
        SimulationConfig(
            customers=ARRIVALS_PER_MINUTE * (CHANGED_MINUTES + WARMUP_MINUTES),
            duration_s=CHANGED_MINUTES * 60,
            start=cut,
            seed=seed + 1,
            warmup_s=WARMUP_MINUTES * 60,
            behavior=CHANGED,
        ),
    )
    lines = 0
    with path.open("wb") as out:
        for config in parts:
            for i, event in enumerate(simulate(config)):
                line = encode(event)
                out.write(line + b"\n")
                lines += 1
                if i == 100:  # the same event twice: a duplicate
                    out.write(line + b"\n")
                    lines += 1
        for line in BAD_LINES:
            out.write(line + b"\n")
            lines += 1
    return Traffic(path, start, lines)


@dataclass(frozen=True)
class Processed:
    traffic: Traffic
    data_dir: Path
    summary: dict[str, int]


def process_traffic(directory: Path) -> Processed:
    """Write the traffic and run it through `xp process` into `directory`/data.

    A subprocess, because `xp process` starts a fresh dataset in its data directory
    and chDB opens one directory per process (tests/conftest.py).
    """
    from tests.integration.exactness import xp

    traffic = write_traffic(directory / "traffic.jsonl")
    data_dir = directory / "data"
    out = xp("process", str(traffic.path), "--data-dir", str(data_dir), "--json", timeout=600)
    return Processed(traffic, data_dir, json.loads(out.strip().splitlines()[-1]))
