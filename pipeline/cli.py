"""The `xp` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from pipeline import clickhouse
from pipeline.config import Settings
from pipeline.errors import ConfigurationError, XpError

log = logging.getLogger("xp")


def configure_logging(level: str) -> None:
    """Own the logging setup: Faust would otherwise put the root logger at DEBUG."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    quiet = logging.WARNING if level.upper() != "DEBUG" else logging.DEBUG
    for name in ("faust", "mode", "aiokafka", "kafka", "clickhouse_connect", "chdb"):
        logging.getLogger(name).setLevel(max(quiet, logging.getLogger().level))


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None) is not None:
        overrides["data_dir"] = args.data_dir
    return Settings(**overrides)


def _print_json(obj: object) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")


def cmd_process(args: argparse.Namespace) -> int:
    from pipeline.ingest import file_lines
    from pipeline.runner import run_through

    settings = _settings(args)
    path: Path = args.file
    if not path.is_file():
        raise ConfigurationError(f"no such file: {path}")
    total = sum(1 for _ in file_lines(path))
    result, _ = asyncio.run(
        run_through(settings, file_lines(path), total=total, label=f"processing {path.name}")
    )
    if args.json:
        _print_json(result.as_dict())
    else:
        print(
            f"{result.received:,} received: {result.stored:,} stored, "
            f"{result.duplicates:,} duplicates, {result.rejected:,} rejected "
            f"in {result.seconds:.1f}s ({result.as_dict()['events_per_second']:,} events/s)"
        )
        print(f'query them with: xp sql --data-dir {settings.data_dir} "SELECT ..."')
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    settings = _settings(args)
    client = clickhouse.connect(settings.clickhouse_url, settings.data_dir)
    columns, rows = clickhouse.query(client, args.query)
    if args.json:
        text = clickhouse.format_json_lines(columns, rows)
    else:
        text = clickhouse.format_table(columns, rows)
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


async def _paced(events: Any, rate: float) -> AsyncIterator[bytes]:
    """Hand out encoded events at `rate` per second (0: as fast as Kafka takes them)."""
    from pipeline.simulate import encode

    started = time.monotonic()
    for i, event in enumerate(events):
        if rate and i % 100 == 0:
            ahead = i / rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        elif i % 1000 == 0:
            await asyncio.sleep(0)
        yield encode(event)


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.runner import run_through
    from pipeline.simulate import SimulationConfig, simulate
    from pipeline.summary import render_summary, summary_data

    settings = _settings(args)
    config = SimulationConfig(
        customers=args.customers, duration_s=args.duration * 60, seed=args.seed
    )
    print(
        f"xp demo: {args.customers:,} customers, {args.duration:g} minutes of web, app and "
        f"support journeys, through Kafka, Faust and ClickHouse in {settings.data_dir}",
        file=sys.stderr,
    )
    events = list(simulate(config))
    result, client = asyncio.run(
        run_through(settings, _paced(events, args.rate), total=len(events), label="demo")
    )
    if args.json:
        _print_json({"run": result.as_dict(), "summary": summary_data(client)})
    else:
        print(render_summary(client))
        print(
            f"{result.received:,} events in {result.seconds:.1f}s: {result.stored:,} stored, "
            f"{result.duplicates:,} duplicates, {result.rejected:,} rejected. "
            f'Explore: xp sql --data-dir {settings.data_dir} "SELECT * FROM xp.stage_hour"'
        )
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from pipeline.ingest import file_lines, produce
    from pipeline.topics import ensure_topics

    settings = _settings(args)
    if not settings.kafka_bootstrap:
        raise ConfigurationError(
            "xp ingest sends to a running Kafka: set XP_KAFKA_BOOTSTRAP "
            "(for a one-shot local run use `xp process FILE`)"
        )
    bootstrap = settings.kafka_bootstrap

    async def run() -> int:
        await ensure_topics(bootstrap, settings)
        sent = 0
        async for count in produce(bootstrap, settings.touchpoints_topic, file_lines(args.file)):
            sent = count
        return sent

    sent = asyncio.run(run())
    print(f"{sent:,} events sent to {settings.touchpoints_topic} on {bootstrap}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from pipeline.observability import serve_metrics
    from pipeline.runner import run_worker

    settings = _settings(args)
    serve_metrics(args.metrics_port)
    worker = asyncio.run(run_worker(settings, until_idle=args.until_idle))
    counts = dict(worker.counts)
    if args.json:
        _print_json(counts)
    else:
        log.info("worker stopped: %s", counts)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    client = clickhouse.connect(settings.clickhouse_url, settings.data_dir)
    applied = clickhouse.migrate(client)
    print("\n".join(f"applied {name}" for name in applied) or "schema is up to date")
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    import schemas
    from schemas.export import write_json_schemas

    for path in write_json_schemas(Path(schemas.__file__).parent):
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xp", description="Experience telemetry: touchpoints → Kafka → Faust → ClickHouse"
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (XP_LOG_LEVEL)")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_data_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--data-dir", type=Path, default=None, help="embedded data (default ./.xp-data)"
        )
        return p

    p = with_data_dir(sub.add_parser("process", help="run a JSONL file through the pipeline"))
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="last stdout line is a JSON summary")
    p.set_defaults(func=cmd_process)

    p = with_data_dir(sub.add_parser("sql", help="query ClickHouse"))
    p.add_argument("query")
    p.add_argument("--json", action="store_true", help="one JSON object per row")
    p.set_defaults(func=cmd_sql)

    p = with_data_dir(sub.add_parser("demo", help="simulated journeys end to end, with a summary"))
    p.add_argument("--customers", type=int, default=4000)
    p.add_argument("--duration", type=float, default=90, help="minutes of event time")
    p.add_argument("--rate", type=float, default=4000, help="events per second (0: unpaced)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("ingest", help="send a JSONL file to the configured Kafka")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_ingest)

    p = with_data_dir(sub.add_parser("worker", help="run the worker (long-running)"))
    p.add_argument("--until-idle", action="store_true", help="exit once everything is applied")
    p.add_argument("--metrics-port", type=int, default=0, help="serve /metrics (0: off)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_worker)

    p = with_data_dir(sub.add_parser("migrate", help="apply ClickHouse migrations"))
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("schemas", help="write the JSON Schema files of the event contract")
    p.set_defaults(func=cmd_schemas)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = args.log_level or Settings().log_level
    if args.command in {"process", "demo", "sql"} and args.log_level is None:
        level = "WARNING"
    configure_logging(level)
    try:
        code: int = args.func(args)
    except XpError as exc:
        print(f"xp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xp: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
