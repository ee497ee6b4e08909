"""Comparing everything the pipeline stored with what the oracle computes, row by row.

Any difference is a bug in the pipeline, the oracle or docs/semantics.md; the report
lists the first few differing keys of every relation at once so that one run shows the
whole picture. Results are read through `xp sql` in a subprocess because chDB allows one
data directory per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.oracle import EXPERIENCE_COLUMNS, STAGE_COLUMNS, Expected, expected

XP = Path(sys.executable).parent / "xp"
LINES = 25_000
SEED = 20_250_301
# The settings the oracle assumes, pinned so that a changed default cannot skew the test.
JOURNEY_TTL_S = 3_700
SETTINGS = {
    "XP_PARTITIONS": "4",
    "XP_ALLOWED_LATENESS_S": "3600",
    "XP_MAX_CLOCK_SKEW_S": "300",
    "XP_MAX_EVENT_BYTES": "65536",
    # Short enough that the corpora's hours of event time expire journeys.
    "XP_JOURNEY_TTL_S": str(JOURNEY_TTL_S),
}
SHOW = 5
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def oracle(corpus: Path, **settings: int) -> Expected:
    """The oracle's numbers for `corpus` under the settings pinned in SETTINGS."""
    return expected(corpus, journey_ttl_s=JOURNEY_TTL_S, **settings)


def xp(*args: str, timeout: float) -> str:
    proc = subprocess.run(
        [str(XP), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **SETTINGS},
        check=False,
    )
    assert proc.returncode == 0, f"xp {args[0]} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


def _sql(data_dir: Path, query: str) -> list[dict[str, Any]]:
    out = xp("sql", "--data-dir", str(data_dir), "--json", query, timeout=300)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _ms(value: str) -> int:
    """Epoch ms of a DateTime64 as `xp sql --json` prints it (ISO 8601, UTC when naive)."""
    moment = datetime.fromisoformat(value.replace(" ", "T"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _seconds(value: float | str | None) -> float | None:
    """Seconds rounded to the millisecond both sides measure in, hiding float noise."""
    return None if value is None else round(float(value), 3)


def _keyed(
    name: str,
    rows: list[dict[str, Any]],
    key: Callable[[dict[str, Any]], Hashable],
    value: Callable[[dict[str, Any]], Any],
    problems: list[str],
) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    repeated = [k for k, n in Counter(map(key, rows)).items() if n > 1]
    if repeated:
        problems.append(f"{name}: {len(repeated)} keys repeated, e.g. {repeated[:SHOW]}")
    for r in rows:
        out[key(r)] = value(r)
    return out


def _show(key: Any) -> Any:
    """A window key with its start readable (the oracle keys windows by epoch seconds)."""
    if isinstance(key, tuple) and key and isinstance(key[0], int):
        return (datetime.fromtimestamp(key[0], UTC).strftime("%Y-%m-%d %H:%M"), *key[1:])
    return key


def _compare(
    name: str, want: Mapping[Any, Any], got: Mapping[Any, Any], problems: list[str]
) -> None:
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    differ = [k for k in want if k in got and want[k] != got[k]]
    if not (missing or extra or differ):
        return
    lines = [
        f"{name}: {len(want)} expected, {len(got)} stored: {len(missing)} missing, "
        f"{len(extra)} unexpected, {len(differ)} differ"
    ]
    lines += [f"  missing {_show(k)}: {want[k]}" for k in sorted(missing, key=repr)[:SHOW]]
    lines += [f"  unexpected {_show(k)}: {got[k]}" for k in sorted(extra, key=repr)[:SHOW]]
    for k in sorted(differ, key=repr)[:SHOW]:
        w, g = want[k], got[k]
        if isinstance(w, dict) and isinstance(g, dict):
            w, g = (
                {c: w.get(c) for c in w.keys() | g.keys() if w.get(c) != g.get(c)},
                {c: g.get(c) for c in w.keys() | g.keys() if w.get(c) != g.get(c)},
            )
        lines.append(f"  {_show(k)}: expected {w}, stored {g}")
    problems.append("\n".join(lines))


def _windows(
    data_dir: Path, relation: str, columns: tuple[str, ...], problems: list[str]
) -> dict[tuple[int, str, str], dict[str, int]]:
    rows = _sql(
        data_dir, f"SELECT window_start, channel, stage, {', '.join(columns)} FROM xp.{relation}"
    )
    got = _keyed(
        relation,
        rows,
        lambda r: (_ms(r["window_start"]) // 1000, r["channel"], r["stage"]),
        lambda r: {c: int(r[c]) for c in columns},
        problems,
    )
    # A row of zeros says nothing; the oracle leaves such rows out of experience relations.
    return {k: v for k, v in got.items() if any(v.values())}


def _check_events(data_dir: Path, want: Expected, problems: list[str]) -> None:
    rows = _sql(
        data_dir,
        "SELECT event_id, source, type, occurred_at, received_at, identity, customer_id,"
        " anonymous_id, session_id, stage, properties, context FROM xp.events",
    )

    def value(r: dict[str, Any]) -> dict[str, Any]:
        return {
            **{c: r[c] for c in ("source", "type", "identity", "customer_id", "anonymous_id")},
            "occurred_at": _ms(r["occurred_at"]),
            "received_at": _ms(r["received_at"]),
            "session_id": r["session_id"],
            "stage": r["stage"],
            "properties": json.loads(r["properties"]),
            "context": r["context"],
        }

    got = _keyed("xp.events", rows, lambda r: r["event_id"], value, problems)
    _compare("xp.events", want.events, got, problems)


def _check_rejected(data_dir: Path, want: Expected, problems: list[str]) -> None:
    rows = _sql(data_dir, "SELECT reason, raw, truncated FROM xp.rejected_events")
    got: Counter[tuple[bytes, str]] = Counter((r["raw"].encode(), r["reason"]) for r in rows)
    wrong_flag = [r["reason"] for r in rows if int(r["truncated"]) != (r["reason"] == "too_large")]
    if wrong_flag:
        problems.append(f"xp.rejected_events: truncated flag wrong for {Counter(wrong_flag)}")
    missing, extra = want.rejected - got, got - want.rejected
    if missing or extra:
        lines = [
            f"xp.rejected_events: {want.rejected_count} expected, {len(rows)} stored: "
            f"{missing.total()} missing, {extra.total()} unexpected"
        ]
        lines += [f"  missing {reason}: {raw[:120]!r}" for raw, reason in list(missing)[:SHOW]]
        lines += [f"  unexpected {reason}: {raw[:120]!r}" for raw, reason in list(extra)[:SHOW]]
        problems.append("\n".join(lines))


def _check_journeys(data_dir: Path, want: Expected, problems: list[str]) -> None:
    rows = _sql(
        data_dir,
        "SELECT identity, stage, channel, entered_at, converted, seconds_to_convert"
        " FROM xp.stage_entries",
    )
    got = _keyed(
        "xp.stage_entries",
        rows,
        lambda r: (r["identity"], r["stage"]),
        lambda r: {
            "channel": r["channel"],
            "entered_at": _ms(r["entered_at"]),
            "converted": int(r["converted"]),
            "seconds_to_convert": _seconds(r["seconds_to_convert"]),
        },
        problems,
    )
    entries = {
        k: {**v, "seconds_to_convert": _seconds(v["seconds_to_convert"])}
        for k, v in want.stage_entries.items()
    }
    _compare("xp.stage_entries", entries, got, problems)

    rows = _sql(data_dir, "SELECT anonymous_id, customer_id, linked_at FROM xp.identity_links")
    links = _keyed(
        "xp.identity_links",
        rows,
        lambda r: r["anonymous_id"],
        lambda r: (r["customer_id"], _ms(r["linked_at"])),
        problems,
    )
    want_links = {a: (c, want.linked_at[a]) for a, c in want.identity_links.items()}
    _compare("xp.identity_links", want_links, links, problems)


def problems_against(data_dir: Path, want: Expected) -> list[str]:
    """Every difference between the stored relations and the oracle's, as readable lines."""
    problems: list[str] = []
    _check_events(data_dir, want, problems)
    _check_rejected(data_dir, want, problems)
    duplicates = int(_sql(data_dir, "SELECT count() AS n FROM xp.duplicates")[0]["n"])
    if duplicates != want.duplicates:
        problems.append(f"xp.duplicates: {want.duplicates} expected, {duplicates} stored")
    for relation, columns, rows in (
        ("stage_minute", STAGE_COLUMNS, want.stage_minute),
        ("stage_hour", STAGE_COLUMNS, want.stage_hour),
        ("stage_day", STAGE_COLUMNS, want.stage_day),
        ("experience_minute", EXPERIENCE_COLUMNS, want.experience_minute),
        ("experience_hour", EXPERIENCE_COLUMNS, want.experience_hour),
        ("experience_day", EXPERIENCE_COLUMNS, want.experience_day),
    ):
        _compare(f"xp.{relation}", rows, _windows(data_dir, relation, columns, problems), problems)
    _check_journeys(data_dir, want, problems)
    alerts = _sql(data_dir, "SELECT alert_id, status, metric, channel, stage FROM xp.alerts")
    if alerts:
        problems.append(f"xp.alerts: {len(alerts)} rows, expected none, e.g. {alerts[:SHOW]}")
    return problems
