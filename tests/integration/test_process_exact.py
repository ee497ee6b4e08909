"""`xp process` on a generated corpus stores exactly what the oracle computes, row by row.

The corpus (tests/corpus.py) carries every kind of trouble docs/semantics.md handles; the
oracle (tests/oracle.py) is an independent implementation of that page.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.corpus import make_corpus
from tests.integration.exactness import oracle, problems_against, xp

pytestmark = pytest.mark.integration

LINES = 25_000
SEED = 20_250_301


def test_process_stores_exactly_what_the_oracle_computes(tmp_path: Path) -> None:
    # Yesterday 22:30 UTC: recent (no retention can drop it) and across midnight (two days).
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start -= timedelta(minutes=90)
    corpus = tmp_path / "corpus.jsonl"
    info = make_corpus(corpus, lines=LINES, seed=SEED, start=start)
    want = oracle(corpus)
    data_dir = tmp_path / "data"

    summary = json.loads(
        xp("process", str(corpus), "--data-dir", str(data_dir), "--json", timeout=1800)
        .strip()
        .splitlines()[-1]
    )
    assert summary["received"] == LINES
    assert summary["received"] == summary["stored"] + summary["duplicates"] + summary["rejected"]
    assert (summary["stored"], summary["duplicates"], summary["rejected"]) == (
        want.stored,
        want.duplicates,
        want.rejected_count,
    ), f"oracle rejects {dict(want.reasons())}"

    problems = problems_against(data_dir, want)
    header = f"corpus seed={SEED} start={start.isoformat()} ({info.lines} lines) at {corpus}"
    assert not problems, header + "\n" + "\n\n".join(problems)
