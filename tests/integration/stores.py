"""One store from several: the rows several worker processes wrote to chDB stores of their own.

In production every worker writes to one ClickHouse server. On this machine the
only ClickHouse is chDB, which runs inside the process and locks its data
directory: a second process cannot open a directory another one holds (chDB
answers "Error initializing EmbeddedServer"). So each test worker writes to a
directory of its own, and this module builds the store a shared server would
hold: every row any worker inserted, in one set of tables.

That union is what a server would hold because every storage table is a
ReplacingMergeTree whose key identifies a fact (deploy/clickhouse/*.sql): a row
written by two workers, or twice by one, collapses as it would on a server,
and window partials carry the version (the batch offset) that decides which
copy wins whatever order the inserts arrived in. One table depends on the
order of inserts instead: `stage_entries_store` keeps the last entry written
for an identity and stage, because a journey that expired and began again
replaces its entries (docs/semantics.md §4, Expiry). Inserted in processing
order, as a server receives them, the last one is the newest journey's, which
is also the one entered latest (a new journey starts more than the journey TTL
after the old one's last event); the union cannot know the order in which
different workers inserted, so it keeps that latest entry explicitly.

What a server could not show is also checked here: two copies of one fact
whose values differ, where the fact is the key plus the version or, in the two
tables that expiry lets record a key again later, plus the record's time. Then
which copy is read would depend on insert order or merge timing, so such a
conflict is a bug even when the answer happens to be right.

chDB is opened only in subprocesses (`python -m tests.integration.stores`),
never in the test process, which may hold another chDB directory already.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from pathlib import Path

from clickhouse_connect.driver.client import Client

from pipeline import clickhouse

_REPO = Path(__file__).resolve().parents[2]
_VERSION = re.compile(r"ReplacingMergeTree\((\w+)\)")


def _file(directory: Path, table: str) -> str:
    path = directory / f"{table}.native"
    # The paths come from pytest's tmp_path; a quote would break the literal.
    assert "'" not in str(path), path
    return str(path)


def export(data_dir: Path, out: Path) -> None:
    """Write every storage table of the store under `data_dir` to Native files in `out`."""
    client = clickhouse.connect(None, data_dir)
    out.mkdir(parents=True, exist_ok=True)
    for table in clickhouse.STORAGE_TABLES:
        client.command(
            f"INSERT INTO FUNCTION file('{_file(out, table)}', 'Native') SELECT * FROM {table}"
        )


#: Tables where expiry records a key again later, by the column holding the record's time.
_RECORD_TIME = {
    "xp.stage_entries_store": "entered_at",
    "xp.identity_links_store": "linked_at",
}
#: Tables whose copies of a key differ by design and replace by insert order: the union
#: keeps the copy with the latest of this column (see above).
_LATEST = {"xp.stage_entries_store": "entered_at"}


def _structure(client: Client, table: str) -> tuple[list[str], list[tuple[str, str]]]:
    """A storage table's key (its sorting key, plus the version column if any) and columns.

    Read from the table's own definition, so that a migration changing a key
    changes the union and the checks with it.
    """
    database, name = table.split(".")
    parameters = {"d": database, "n": name}
    ((sorting_key, engine),) = client.query(
        "SELECT sorting_key, engine_full FROM system.tables"
        " WHERE database = {d:String} AND name = {n:String}",
        parameters=parameters,
    ).result_rows
    key = [column.strip() for column in sorting_key.split(",")]
    version = _VERSION.search(engine)
    if version:
        key.append(version.group(1))
    columns = client.query(
        "SELECT name, type FROM system.columns"
        " WHERE database = {d:String} AND table = {n:String} ORDER BY position",
        parameters=parameters,
    ).result_rows
    return key, [(column, kind) for column, kind in columns]


def _exported(table: str, columns: list[tuple[str, str]], exports: list[Path]) -> str:
    """A subquery of every row of `table` in every export (typed, so empty files read too)."""
    structure = ", ".join(f"{column} {kind}" for column, kind in columns).replace("'", "\\'")
    return " UNION ALL ".join(
        f"SELECT * FROM file('{_file(d, table)}', 'Native', '{structure}')" for d in exports
    )


def merge(data_dir: Path, exports: list[Path]) -> list[str]:
    """Insert every exported table into a fresh store under `data_dir`; return its conflicts."""
    client = clickhouse.connect(None, data_dir)
    clickhouse.migrate(client)
    found: list[str] = []
    for table in clickhouse.STORAGE_TABLES:
        key, columns = _structure(client, table)
        rows = _exported(table, columns, exports)
        found += _conflicts(client, table, key, columns, rows)
        latest = _LATEST.get(table)
        if latest is None:
            client.command(f"INSERT INTO {table} SELECT * FROM ({rows})")
        else:
            keys = ", ".join(key)
            client.command(
                f"INSERT INTO {table} SELECT * FROM ({rows})"
                f" ORDER BY {keys}, {latest} DESC LIMIT 1 BY {keys}"
            )
    return found


def _conflicts(
    client: Client, table: str, key: list[str], columns: list[tuple[str, str]], rows: str
) -> list[str]:
    """Facts of `table` exported with differing values, as readable lines.

    Read from the exported rows, not from a table: ReplacingMergeTree collapses
    the copies within one insert, and a merge those of a table, so a table
    hides exactly what this looks for. (Copies within one worker's store may
    have collapsed before the export; across stores none can have.)
    """
    fact = [*key, _RECORD_TIME[table]] if table in _RECORD_TIME else key
    values = [column for column, _ in columns if column not in fact]
    if not values:
        return []
    differ = client.query(
        f"SELECT {', '.join(fact)}, uniqExact(tuple({', '.join(values)})) AS versions"
        f" FROM ({rows}) GROUP BY {', '.join(fact)} HAVING versions > 1 LIMIT 5"
    ).result_rows
    if not differ:
        return []
    return [f"{table}: copies of one ({', '.join(fact)}) differ, e.g. {differ}"]


def union(sources: list[Path], merged: Path, scratch: Path) -> list[str]:
    """Build `merged` from the stores in `sources`; return the conflicting copies found."""
    exports = [scratch / f"export-{i}" for i in range(len(sources))]
    # One process per store (chDB allows one directory per process), side by side.
    with ThreadPoolExecutor(max_workers=max(1, len(sources))) as pool:
        list(pool.map(_run, repeat("export"), map(str, sources), map(str, exports)))
    found: list[str] = json.loads(_run("merge", str(merged), *map(str, exports)))
    return found


def _run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.integration.stores", *args],
        cwd=_REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, (
        f"stores {args[0]} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    )
    return proc.stdout


def main(argv: list[str]) -> None:
    command, data_dir, *rest = argv
    if command == "export":
        export(Path(data_dir), Path(rest[0]))
    elif command == "merge":
        print(json.dumps(merge(Path(data_dir), [Path(p) for p in rest])))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
