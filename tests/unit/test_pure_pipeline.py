"""The pipeline's pure stages agree with the oracle on the corpus, expiry included.

The integration tests compare the whole pipeline with the oracle at the default journey
TTL (30 days), which a two-hour corpus never reaches. Here the same comparison runs on the
pure stages (tests/pure_pipeline.py) with a TTL just over an hour, so that identities
pausing between sessions start new journeys, tickets expire under active customers and
links are recorded again, and with several batch splits, which must not matter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config import Settings
from tests.corpus import make_corpus
from tests.oracle import JOURNEY_TTL_S, Expected, expected
from tests.pure_pipeline import run_pure

#: The relations the pure stages produce (hours and days are ClickHouse's).
RELATIONS = (
    "received",
    "duplicates",
    "events",
    "rejected",
    "stage_minute",
    "experience_minute",
    "stage_entries",
    "identity_links",
    "linked_at",
)
#: Just over the least TTL the default lateness allows (3,660 s); corpus pauses are 40-75 min.
SHORT_TTL_S = 3700
SPLITS = ([1000], [37, 1, 400])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    make_corpus(path, lines=6000, seed=11, start=datetime(2025, 3, 1, 23, 0, tzinfo=UTC))
    return path


def differences(want: Expected, got: Expected) -> dict[str, Any]:
    """Per relation that differs, a few of the differing keys with both values."""
    out: dict[str, Any] = {}
    for name in RELATIONS:
        w, g = getattr(want, name), getattr(got, name)
        if isinstance(w, dict):
            wrong = sorted((k for k in w.keys() | g.keys() if w.get(k) != g.get(k)), key=repr)
            if wrong:
                out[name] = [(k, w.get(k), g.get(k)) for k in wrong[:3]]
        elif w != g:
            out[name] = (w, g)
    return out


def test_a_short_ttl_changes_the_corpus_results(corpus: Path) -> None:
    """Else the comparison below would not exercise expiry."""
    short, default = expected(corpus, journey_ttl_s=SHORT_TTL_S), expected(corpus)
    changed = [k for k, v in default.stage_entries.items() if short.stage_entries.get(k) != v]
    assert len(changed) > 20
    resolutions = [
        sum(row["resolutions"] for row in out.experience_minute.values())
        for out in (short, default)
    ]
    assert resolutions[0] < resolutions[1]


@pytest.mark.parametrize("ttl_s", [SHORT_TTL_S, JOURNEY_TTL_S])
def test_the_pure_stages_store_what_the_oracle_computes(corpus: Path, ttl_s: int) -> None:
    want = expected(corpus, journey_ttl_s=ttl_s)
    settings = Settings(partitions=4, allowed_lateness_s=3600, journey_ttl_s=ttl_s)
    snapshots = []
    for sizes in SPLITS:
        run = run_pure(corpus, settings, sizes)
        assert not differences(want, run.result()), (sizes, differences(want, run.result()))
        snapshots.append({q: canonical(state.snapshot()) for q, state in run.states.items()})
    assert all(s == snapshots[0] for s in snapshots)


def canonical(snapshot: dict[str, Any]) -> Any:
    """A snapshot with its lists of windows and seen ids in one order, as plain data."""
    data = orjson.loads(orjson.dumps(snapshot, option=orjson.OPT_NON_STR_KEYS))
    data["g"], data["s"] = sorted(data["g"]), sorted(data["s"])
    return data
