"""`xp serve`: the embedded stack as a long-running local service.

One process runs the broker, the worker and the collector, so that a developer
points a web page or an app at localhost and sees the events in ClickHouse.
chDB lets one process hold a data directory, so while the service runs it
also answers read-only queries for it: it writes its address to `serve.json`
in the data directory, and `xp sql` (through `running`) asks it instead of
failing on the directory's lock. The endpoint listens on loopback only, wants
the token from that file (readable by its owner only), and runs every query on
a chDB connection with ClickHouse's `readonly` setting, which refuses writes,
DDL and changing the setting back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import secrets
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import clickhouse_connect
import orjson
from aiohttp import web
from clickhouse_connect.driver.client import Client

from pipeline import clickhouse
from pipeline.collector import SOURCES, ApiKeys, Collector, until_stopped
from pipeline.config import Settings
from pipeline.embedded import kafka
from pipeline.errors import ConfigurationError, XpError
from pipeline.runner import check_or_exit, open_clickhouse
from pipeline.topics import ensure_topics
from pipeline.worker import Worker

log = logging.getLogger("xp.serve")

STATE_FILE = "serve.json"
#: How long a stopping service waits for the worker to store what the collector accepted.
DRAIN_TIMEOUT_S = 120.0
_HEALTH_EVERY_S = 1.0
_READ_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")
# Comments and opening parentheses may precede the first keyword of a statement.
_FIRST_WORD = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*([A-Za-z]+)", re.DOTALL)


# --- query results over HTTP ------------------------------------------------------
# Rows are sent as JSON with the types JSON lacks tagged, so that `xp sql` and
# the report print exactly what they print when they read chDB themselves.


def encode_value(value: Any) -> Any:
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else {"$int": str(value)}
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, list):
        return [encode_value(v) for v in value]
    if isinstance(value, tuple):
        return {"$tuple": [encode_value(v) for v in value]}
    if isinstance(value, dict):
        return {"$map": [[encode_value(k), encode_value(v)] for k, v in value.items()]}
    # UUIDs and IP addresses: both outputs print them as their text.
    return str(value)


_DECODERS: dict[str, Any] = {
    "$int": int,
    "$float": float,
    "$datetime": datetime.fromisoformat,
    "$date": date.fromisoformat,
    "$decimal": Decimal,
    "$tuple": lambda items: tuple(decode_value(v) for v in items),
    "$map": lambda pairs: {decode_value(k): decode_value(v) for k, v in pairs},
}


def decode_value(value: Any) -> Any:
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if isinstance(value, dict):
        ((tag, inner),) = value.items()
        return _DECODERS[tag](inner)
    return value


def read_only_statement(sql: str) -> bool:
    """Whether `sql` starts like a read; ClickHouse's readonly setting is the real guard."""
    match = _FIRST_WORD.match(sql)
    return match is not None and match.group(1).upper() in _READ_STATEMENTS


# --- the client side: `xp sql` while `xp serve` runs ---------------------------------


@dataclass(frozen=True)
class QueryResult:
    """The two attributes of a clickhouse-connect result that `clickhouse.query` reads."""

    column_names: tuple[str, ...]
    result_rows: list[tuple[Any, ...]]


@dataclass(frozen=True)
class ServiceClient:
    """Queries answered by a running `xp serve`; duck-types a clickhouse-connect client.

    `clickhouse.query(service, sql)` and everything built on it (the summary,
    the report) work unchanged with it.
    """

    url: str
    token: str
    pid: int

    def query(self, sql: str, **_client_options: Any) -> QueryResult:
        request = urllib.request.Request(
            f"{self.url}/v1/query",
            data=orjson.dumps({"sql": sql}),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                answer = orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            message = orjson.loads(exc.read()).get("message", exc.reason)
            raise XpError(f"query refused by xp serve (pid {self.pid}): {message}") from exc
        except urllib.error.URLError as exc:
            raise XpError(f"xp serve (pid {self.pid}) did not answer: {exc.reason}") from exc
        rows = [tuple(decode_value(v) for v in row) for row in answer["rows"]]
        return QueryResult(tuple(answer["columns"]), rows)


def running(data_dir: Path) -> ServiceClient | None:
    """The `xp serve` that holds `data_dir`, or None when none does.

    A state file left by a killed service names a dead process or a port where
    nothing answers, and is ignored.
    """
    try:
        state = orjson.loads((data_dir / STATE_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    pid = state.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return None
    service = ServiceClient(state["query_url"], state["token"], pid)
    try:
        with urllib.request.urlopen(f"{service.url}/healthz", timeout=2):
            return service
    except OSError:
        return None


def refuse_if_served(settings: Settings) -> None:
    """A clear error, instead of chDB's lock error, for writing to a served data directory."""
    service = running(settings.data_dir) if settings.clickhouse_url is None else None
    if service is not None:
        raise ConfigurationError(
            f"xp serve (pid {service.pid}) holds {settings.data_dir}: stop it or use another "
            "--data-dir (while it runs, xp sql reads through it)"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- the service side ------------------------------------------------------------


class QueryEndpoint:
    """Loopback HTTP endpoint answering read-only queries on the service's chDB."""

    def __init__(self, data_dir: Path) -> None:
        # A second chDB connection on the same engine, read-only by ClickHouse's own rule.
        self._reader: Client = clickhouse_connect.get_client(
            interface="chdb",
            path=str((data_dir / "clickhouse").resolve()),
            settings={"readonly": "1"},
        )
        self.token = secrets.token_urlsafe(24)
        app = web.Application()
        app.router.add_post("/v1/query", self._query)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self) -> str:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _query(self, request: web.Request) -> web.Response:
        if not secrets.compare_digest(
            request.headers.get("Authorization", ""), f"Bearer {self.token}"
        ):
            return _error(401, "the token of serve.json is required")
        try:
            sql = orjson.loads(await request.read())["sql"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _error(400, 'send {"sql": "SELECT ..."}')
        if not isinstance(sql, str) or not read_only_statement(sql):
            return _error(
                400,
                "xp serve holds this data directory and answers read queries only "
                f"({', '.join(_READ_STATEMENTS)}); stop it to write",
            )
        try:
            columns, rows = await asyncio.to_thread(clickhouse.query, self._reader, sql)
        except Exception as exc:
            return _error(400, str(exc))
        body = {"columns": columns, "rows": [[encode_value(v) for v in row] for row in rows]}
        return web.Response(body=orjson.dumps(body), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def _write_state(path: Path, state: dict[str, Any]) -> None:
    """Atomically, and readable by the owner only: it holds the query token and keys."""
    partial = path.with_suffix(".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(orjson.dumps(state, option=orjson.OPT_INDENT_2))
    partial.replace(path)


async def serve(settings: Settings, host: str, port: int) -> dict[str, int]:
    """Run broker, worker and collector until SIGTERM or Ctrl-C, then store everything.

    Stopping order: the collector stops listening, answers what is in flight
    and flushes its producer; the worker then runs until every event on Kafka
    is stored; only then do the worker and the broker stop. Returns the
    worker's counts.
    """
    keys = ApiKeys.from_settings(settings)
    generated: dict[str, str] = {}
    if not keys:
        generated = {source: secrets.token_urlsafe(18) for source in SOURCES}
        keys = ApiKeys(generated.items())
    client = open_clickhouse(settings)
    state_path = settings.data_dir / STATE_FILE
    queries = QueryEndpoint(settings.data_dir) if settings.clickhouse_url is None else None
    try:
        with kafka(settings) as bootstrap:
            if settings.kafka_bootstrap is None:
                # As for `xp process`: the embedded broker starts empty, and with it
                # the offsets and state that exact numbers rest on.
                log.warning("embedded broker: starting a fresh dataset in %s", settings.data_dir)
                clickhouse.reset(client)
            await ensure_topics(bootstrap, settings)
            worker = Worker(settings, bootstrap, client)
            await worker.start()
            try:
                collector = Collector(settings, bootstrap, keys)
                url = await collector.start(host, port)
                try:
                    state: dict[str, Any] = {
                        "pid": os.getpid(),
                        "collector_url": url,
                        "kafka_bootstrap": bootstrap,
                    }
                    if queries is not None:
                        state |= {"query_url": await queries.start(), "token": queries.token}
                    if generated:
                        state["keys"] = generated
                    _write_state(state_path, state)
                    _banner(settings, url, bootstrap, generated, state_path)
                    await _until_stopped_or_failed(worker)
                    log.warning("stopping: flushing what the collector accepted")
                finally:
                    await collector.stop()
                await _drain(worker)
            finally:
                await worker.stop()
    finally:
        if queries is not None:
            await queries.stop()
        state_path.unlink(missing_ok=True)
    return dict(worker.counts)


async def _until_stopped_or_failed(worker: Worker) -> None:
    """Wait for a stop signal; a worker that died ends the service instead of hiding."""
    stopped = asyncio.ensure_future(until_stopped())
    try:
        while not stopped.done():
            check_or_exit(worker)
            await asyncio.wait([stopped], timeout=_HEALTH_EVERY_S)
    finally:
        if not stopped.done():
            stopped.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopped


async def _drain(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_TIMEOUT_S
    while not await worker.idle():
        if loop.time() > deadline:
            log.error(
                "the worker did not store everything within %.0fs; what is left is lost "
                "with the embedded broker (counts %s)",
                DRAIN_TIMEOUT_S,
                dict(worker.counts),
            )
            return
        await asyncio.sleep(0.25)


def _banner(
    settings: Settings, url: str, bootstrap: str, generated: dict[str, str], state: Path
) -> None:
    lines = [
        f"xp serve: collector on {url} (POST /v1/events, /v1/webhooks/tickets), "
        f"Kafka on {bootstrap} (producer SDK)",
        f"  data in {settings.data_dir}; `xp sql --data-dir {settings.data_dir} ...` "
        "is answered by this process while it runs",
    ]
    if generated:
        pairs = ", ".join(f"{source}={key}" for source, key in generated.items())
        lines.append(f"  API keys for this run (also in {state}): {pairs}")
    lines.append("  Ctrl-C or SIGTERM stops it after storing everything accepted")
    print("\n".join(lines), file=sys.stderr, flush=True)


def open_reader(settings: Settings) -> Any:
    """A client to read with: the running `xp serve` when it holds the data directory.

    Otherwise the configured server or chDB itself. Either works with
    `clickhouse.query`, hence the loose type.
    """
    service = running(settings.data_dir) if settings.clickhouse_url is None else None
    if service is not None:
        return service
    return clickhouse.connect(settings.clickhouse_url, settings.data_dir)
