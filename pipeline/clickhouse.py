"""ClickHouse: connections, migrations, the sink and ad-hoc queries.

Production talks to a ClickHouse server over HTTP; embedded runs and tests use
chDB, ClickHouse inside this process, through the same clickhouse-connect
client, so every query and insert takes one code path. chDB hosts a single
engine (one data path) per process, hence the per-process cache in `connect`.

Users read the views of docs/relations.md; the storage tables written here
are private. Every storage table collapses identical keys, so writing the same
rows again after a replay changes nothing users can see.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import chain
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import clickhouse_connect
import orjson
from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.driver.client import Client

from pipeline.errors import ConfigurationError, XpError
from pipeline.faults import FaultSwitch
from pipeline.windows import EXPERIENCE_COLUMNS

log = logging.getLogger("xp.sink")
migrations_log = logging.getLogger("xp.migrate")

DATABASE = "xp"
MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "deploy" / "clickhouse"

EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "source",
    "type",
    "occurred_at",
    "received_at",
    "identity",
    "customer_id",
    "anonymous_id",
    "session_id",
    "stage",
    "properties",
    "context",
    "topic",
    "partition",
    "offset",
)
REJECTED_COLUMNS: tuple[str, ...] = (
    "received_at",
    "reason",
    "detail",
    "raw",
    "truncated",
    "topic",
    "partition",
    "offset",
)
DUPLICATE_COLUMNS: tuple[str, ...] = ("received_at", "event_id", "topic", "partition", "offset")
STAGE_ENTRY_COLUMNS: tuple[str, ...] = (
    "identity",
    "stage",
    "channel",
    "entered_at",
    "converted",
    "seconds_to_convert",
)
IDENTITY_LINK_COLUMNS: tuple[str, ...] = ("anonymous_id", "customer_id", "linked_at")
STAGE_PARTIAL_COLUMNS: tuple[str, ...] = (
    "window_start",
    "channel",
    "stage",
    "events",
    "customers",
    "entries",
    "conversions",
    "partition",
    "version",
)
EXPERIENCE_PARTIAL_COLUMNS: tuple[str, ...] = (
    "window_start",
    "channel",
    "stage",
    *EXPERIENCE_COLUMNS,
    "partition",
    "version",
)
ALERT_COLUMNS: tuple[str, ...] = (
    "alert_id",
    "status",
    "detected_at",
    "metric",
    "channel",
    "stage",
    "period_start",
    "period_end",
    "observed",
    "baseline",
    "change",
    "segment",
    "severity",
    "details",
)


class EngineConflictError(XpError):
    """chDB already runs on another data directory in this process."""


class MigrationError(XpError):
    """The migration files and what the database recorded disagree."""


Row = tuple[Any, ...]


@dataclass(slots=True)
class Rows:
    """Everything one batch writes, as tuples in the order of the `*_COLUMNS` tuples.

    Timestamps are ints (epoch ms for DateTime64(3), epoch s for DateTime), so
    that producers never build datetime objects on the hot path. A Map value
    is a dict or its JSON object text (the bulk stage's encoding of an
    event's context, passed on as it is: parsing it again cost more than the
    rest of its way to ClickHouse); text goes only to tables without float
    columns, which are always inserted as JSON.
    """

    events: list[Row] = field(default_factory=list)
    rejected: list[Row] = field(default_factory=list)
    duplicates: list[Row] = field(default_factory=list)
    stage_entries: list[Row] = field(default_factory=list)
    identity_links: list[Row] = field(default_factory=list)
    stage_partials: list[Row] = field(default_factory=list)
    experience_partials: list[Row] = field(default_factory=list)
    alerts: list[Row] = field(default_factory=list)

    def count(self) -> int:
        return sum(len(getattr(self, name)) for name in _ROW_FIELDS)

    @classmethod
    def joined(cls, parts: Sequence[Rows]) -> Rows:
        """The rows of several batches as one write, in the batches' order."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            *(list(chain.from_iterable(getattr(p, name) for p in parts)) for name in _ROW_FIELDS)
        )

    @property
    def empty(self) -> bool:
        return not any(getattr(self, name) for name in _ROW_FIELDS)


_ROW_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Rows))


@dataclass(frozen=True, slots=True)
class _Target:
    field: str
    table: str
    columns: tuple[str, ...]
    #: Position of a column of raw payloads: bytes that need not be UTF-8, which
    #: JSON cannot carry, so the table is inserted in Native format.
    raw: int | None = None


# Events go first: the hourly and daily views count distinct customers from
# the events, so an interrupted write should leave minutes missing rather
# than minutes without their customers.
_TARGETS: tuple[_Target, ...] = (
    _Target("events", "xp.events_store", EVENT_COLUMNS),
    _Target(
        "rejected", "xp.rejected_events_store", REJECTED_COLUMNS, raw=REJECTED_COLUMNS.index("raw")
    ),
    _Target("duplicates", "xp.duplicates_store", DUPLICATE_COLUMNS),
    _Target("stage_entries", "xp.stage_entries_store", STAGE_ENTRY_COLUMNS),
    _Target("identity_links", "xp.identity_links_store", IDENTITY_LINK_COLUMNS),
    _Target("stage_partials", "xp.stage_minute_partial", STAGE_PARTIAL_COLUMNS),
    _Target("experience_partials", "xp.experience_minute_partial", EXPERIENCE_PARTIAL_COLUMNS),
    _Target("alerts", "xp.alerts_store", ALERT_COLUMNS),
)
STORAGE_TABLES: tuple[str, ...] = tuple(target.table for target in _TARGETS)

# chDB allows one engine per process; at most one entry, keyed by its path.
_engines: dict[Path, Client] = {}
_engines_lock = threading.Lock()


def connect(url: str | None, data_dir: Path) -> Client:
    """A ClickHouse server when `url` is set, else chDB under `data_dir`.

    The chDB client is shared by every caller in the process: a second engine
    cannot be opened, so a call naming another directory fails loudly instead
    of writing somewhere unexpected.
    """
    if url is not None:
        return clickhouse_connect.get_client(**_http_options(url))
    path = (Path(data_dir) / "clickhouse").resolve()
    with _engines_lock:
        if _engines:
            ((opened, client),) = _engines.items()
            if opened != path:
                raise EngineConflictError(
                    f"chDB is already open at {opened} in this process and cannot also "
                    f"open {path}: use one data directory per process"
                )
            return client
        path.mkdir(parents=True, exist_ok=True)
        client = clickhouse_connect.get_client(interface="chdb", path=str(path))
        _engines[path] = client
        return client


def _http_options(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            "the ClickHouse URL must look like http://user:password@host:8123/xp, "
            f"got scheme {parts.scheme!r} and host {parts.hostname!r}"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"the ClickHouse URL has an invalid port: {exc}") from exc
    options: dict[str, Any] = {
        "interface": parts.scheme,
        "host": parts.hostname,
        "port": port or (8443 if parts.scheme == "https" else 8123),
        "password": unquote(parts.password or ""),
    }
    if parts.username:
        options["username"] = unquote(parts.username)
    database = unquote(parts.path.strip("/"))
    if database:
        options["database"] = database
    return options


# ReplacingMergeTree ORDER BY name: two processes migrating at once may both
# record a file, and the copies collapse.
_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS xp.schema_migrations
(
    name String,
    checksum String,
    applied_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY name
"""

# A statement ends with ";" at the end of a line; the files keep semicolons
# out of literals and comments so that this stays the whole parser.
_STATEMENT_END = re.compile(r";[ \t\r]*$", re.MULTILINE)


def migrate(client: Client, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migration files not applied yet, in name order; return their names.

    Files are append-only: an applied file whose content changed is an error,
    because the database would silently disagree with the repository. Every
    statement is idempotent, so two processes migrating at once, or a file
    that failed halfway, converge when run again. Commands skip the client's
    default database, which may not exist before the first migration.
    """
    files = sorted(directory.glob("*.sql"))
    if not files:
        raise MigrationError(f"no migration files (*.sql) in {directory}")
    client.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}", use_database=False)
    client.command(_MIGRATIONS_TABLE, use_database=False)
    recorded = client.query("SELECT name, checksum FROM xp.schema_migrations FINAL")
    applied: dict[str, str] = {name: checksum for name, checksum in recorded.result_rows}
    done: list[str] = []
    for path in files:
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        previous = applied.get(path.name)
        if previous == checksum:
            continue
        if previous is not None:
            raise MigrationError(
                f"migration {path.name} changed after it was applied (checksum "
                f"{previous[:12]} recorded, {checksum[:12]} on disk): migrations are "
                "append-only, put the change in a new file"
            )
        for statement in _statements(path.read_text(encoding="utf-8")):
            client.command(statement, use_database=False)
        client.insert(
            "xp.schema_migrations",
            [[path.name], [checksum], [int(time.time() * 1000)]],
            column_names=["name", "checksum", "applied_at"],
            column_oriented=True,
        )
        migrations_log.info("applied migration %s", path.name)
        done.append(path.name)
    return done


def _statements(text: str) -> list[str]:
    statements = []
    for chunk in _STATEMENT_END.split(text):
        lines = [line for line in chunk.splitlines() if not line.lstrip().startswith("--")]
        statement = "\n".join(lines).strip()
        if statement:
            statements.append(statement)
    return statements


def reset(client: Client) -> None:
    """Empty every storage table, for a run that starts a fresh dataset.

    The schema and its migration records stay: only the data goes.
    """
    for table in STORAGE_TABLES:
        client.command(f"TRUNCATE TABLE IF EXISTS {table}")


# Column types by how the JSON insert writes their values: as they are, epoch
# milliseconds as seconds with a fraction (ClickHouse reads a JSON number for
# a DateTime64 as seconds), or floats, which must be finite (JSON has no NaN
# or infinity, and orjson writes them as null).
_JSON_AS_IS = frozenset(
    {
        "String",
        "LowCardinality(String)",
        "Nullable(String)",
        "Map(String, String)",
        "UInt8",
        "UInt32",
        "UInt64",
        "Int64",
        "DateTime('UTC')",
    }
)
_JSON_MILLISECONDS = frozenset({"DateTime64(3, 'UTC')"})
_JSON_FLOATS = frozenset({"Float64", "Nullable(Float64)"})

# Every insert. Collapsing copies of a key inside the inserted block costs
# ClickHouse a merge pass over each insert (about 1 µs an event row in chDB)
# and buys nothing: copies in different parts exist anyway after any replay,
# so every view reads with FINAL or is insensitive to copies.
_INSERT_SETTINGS: dict[str, Any] = {"optimize_on_insert": 0}

# JSON parsing pinned exact and strict whatever the server's profile says:
# shortest-repr floats read back bit-identical only with the precise parser,
# and a null or a value of the wrong JSON type fails the insert instead of
# becoming a default or a string.
_JSON_SETTINGS: dict[str, Any] = {
    **_INSERT_SETTINGS,
    "precise_float_parsing": 1,
    "date_time_input_format": "basic",
    "input_format_null_as_default": 0,
    "input_format_json_read_numbers_as_strings": 0,
    "input_format_json_read_bools_as_strings": 0,
    "input_format_json_read_arrays_as_strings": 0,
    "input_format_json_read_objects_as_strings": 0,
}

# Without these orjson would write datetimes and dataclasses as JSON text or
# objects that ClickHouse might store as something else; they fail instead.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


@dataclass(frozen=True, slots=True)
class _Plan:
    """How a table's rows are inserted, worked out from its column types once."""

    types: Sequence[ClickHouseType]
    milliseconds: tuple[int, ...]
    floats: tuple[int, ...]
    maps: tuple[int, ...]


def _json_positions(type_names: Sequence[str]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Positions of the DateTime64(3) and of the float columns among `type_names`.

    A type the JSON insert has no exact encoding for is an error here, at the
    first write, rather than values stored subtly wrong.
    """
    unknown = sorted(
        set(type_names) - _JSON_AS_IS - _JSON_MILLISECONDS - _JSON_FLOATS, key=type_names.index
    )
    if unknown:
        raise ValueError(
            f"the sink has no exact JSON encoding for column type {', '.join(unknown)}"
        )
    return (
        tuple(i for i, name in enumerate(type_names) if name in _JSON_MILLISECONDS),
        tuple(i for i, name in enumerate(type_names) if name in _JSON_FLOATS),
    )


def _finite(columns: Sequence[Sequence[Any]], positions: tuple[int, ...]) -> bool:
    """Whether JSON can carry these float columns: orjson writes NaN and infinity as null."""
    return all(math.isfinite(v) for i in positions for v in columns[i] if v is not None)


class Sink:
    """The only writer to ClickHouse: one columnar insert per non-empty list.

    Rows go in as JSONCompactColumns built by orjson in one call: about 1 µs
    of Python a row against 3 µs for clickhouse-connect's Native serialisation.
    ClickHouse spends more parsing JSON than Native (LowCardinality values
    especially), outside the GIL, but less than the Python saved. JSON
    carries every value exactly (see `_JSON_SETTINGS`); what it cannot carry,
    raw payloads that need not be UTF-8 and non-finite floats, goes in Native
    format instead.

    Synchronous (the caller runs it in a thread) and safe to repeat: a write
    that failed halfway is retried whole, and the rows it already stored
    collapse with their copies.
    """

    def __init__(self, client: Client, faults: FaultSwitch | None = None) -> None:
        self._client = client
        self._faults = faults or FaultSwitch(None)
        self._plans: dict[str, _Plan] = {}
        self._lock = threading.Lock()

    def write(self, rows: Rows) -> None:
        if rows.empty:
            return
        started = time.perf_counter()
        counts: list[str] = []
        with self._lock:
            for target in _TARGETS:
                batch: list[Row] = getattr(rows, target.field)
                if batch:
                    self._faults.check(len(counts))
                    self._insert(target, batch)
                    counts.append(f"{target.field}={len(batch)}")
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.info("wrote %s in %.1f ms", " ".join(counts), elapsed_ms)

    def _insert(self, target: _Target, batch: list[Row]) -> None:
        columns: list[Sequence[Any]] = list(zip(*batch, strict=True))
        if len(columns) != len(target.columns):
            raise ValueError(
                f"{target.field} rows have {len(columns)} values, "
                f"{target.table} takes {len(target.columns)}: {', '.join(target.columns)}"
            )
        plan = self._plans.get(target.table) or self._plan(target)
        if target.raw is None and _finite(columns, plan.floats):
            self._insert_json(target, plan, columns)
        else:
            self._insert_native(target, plan, columns)

    def _plan(self, target: _Target) -> _Plan:
        """The table's column types, looked up once per table, not once per insert."""
        types = self._client.create_insert_context(target.table, list(target.columns)).column_types
        names = [t.name for t in types]
        milliseconds, floats = _json_positions(names)
        maps = tuple(i for i, name in enumerate(names) if name.startswith("Map("))
        plan = self._plans[target.table] = _Plan(types, milliseconds, floats, maps)
        return plan

    def _insert_json(self, target: _Target, plan: _Plan, columns: list[Sequence[Any]]) -> None:
        # ms / 1000 is the double nearest the decimal ms/1000, and orjson writes
        # the shortest text that reads back as that double: below 16
        # significant digits, the decimal itself, which ClickHouse reads digit
        # by digit. So the stored DateTime64 is exactly the milliseconds given.
        for i in plan.milliseconds:
            columns[i] = [ms / 1000 for ms in columns[i]]
        for i in plan.maps:
            columns[i] = [orjson.Fragment(v) if type(v) is str else v for v in columns[i]]
        self._client.raw_insert(
            target.table,
            target.columns,
            insert_block=orjson.dumps(columns, option=_ORJSON_OPTIONS),
            fmt="JSONCompactColumns",
            settings=_JSON_SETTINGS,
        )

    def _insert_native(self, target: _Target, plan: _Plan, columns: list[Sequence[Any]]) -> None:
        if target.raw is not None:
            # One String column takes either all bytes or all str, never a mix.
            columns[target.raw] = [
                v.encode() if isinstance(v, str) else v for v in columns[target.raw]
            ]
        context = self._client.create_insert_context(
            target.table,
            list(target.columns),
            column_types=plan.types,
            column_oriented=True,
            data=columns,
            settings=_INSERT_SETTINGS,
        )
        self._client.insert(context=context)


def query(client: Client, sql: str) -> tuple[list[str], list[Row]]:
    """Run `sql` and return column names and rows, for people and scripts.

    Strings are decoded as UTF-8 with replacement characters (a rejected raw
    payload need not be UTF-8) and datetimes are timezone-aware UTC.
    """
    result = client.query(
        sql, tz_mode="aware", query_formats={"String": "bytes", "FixedString": "bytes"}
    )
    rows = [tuple(_decoded(value) for value in row) for row in result.result_rows]
    return list(result.column_names), rows


def _decoded(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_decoded(v) for v in value)
    if isinstance(value, dict):
        return {_decoded(k): _decoded(v) for k, v in value.items()}
    return value


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An aligned plain-text table: numbers right-aligned, a row count at the end."""
    if not columns:
        return ""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(columns)]
    numeric = [
        bool(rows) and all(_is_number(row[i]) or row[i] is None for row in rows)
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        padded = (
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        )
        return " | ".join(padded).rstrip()

    lines = [line(list(columns)), "-+-".join("-" * width for width in widths)]
    lines.extend(line(row) for row in cells)
    lines.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return "\n".join(lines) + "\n"


def format_json_lines(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """One JSON object per row and line, in column order, for scripts."""
    keys = [json.dumps(name, ensure_ascii=False) for name in columns]
    return "".join(
        "{" + ",".join(f"{k}:{_json(v)}" for k, v in zip(keys, row, strict=True)) + "}\n"
        for row in rows
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _iso(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    micros = value.microsecond
    timespec = "seconds" if not micros else "milliseconds" if micros % 1000 == 0 else "microseconds"
    return value.isoformat(timespec=timespec) + "Z"


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple | dict):
        return _json(value)
    return str(value)


# Stored strings come from anyone who can send an event (raw payloads, context values,
# ids): printed as they are, control characters and line separators would break the
# table, or move the cursor, clear or retitle the terminal of whoever runs `xp sql`.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r"})
_ESCAPES.update({code: f"\\u{code:04x}" for code in (0x2028, 0x2029)})


def _cell(value: Any) -> str:
    return _text(value).replace("\\", "\\\\").translate(_ESCAPES)


def _json(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "null"
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else "null"
    if isinstance(value, dict):
        items = (f"{json.dumps(_text(k), ensure_ascii=False)}:{_json(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_json(v) for v in value) + "]"
    return json.dumps(_text(value), ensure_ascii=False)
