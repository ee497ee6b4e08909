"""The `xp` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
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
    from pipeline.serve import open_reader

    settings = _settings(args)
    client = open_reader(settings)
    columns, rows = clickhouse.query(client, args.query)
    if args.json:
        text = clickhouse.format_json_lines(columns, rows)
    else:
        text = clickhouse.format_table(columns, rows)
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


#: When a demo's incident happens, as shares of its duration: after the alert
#: detector's warm-up and first baseline (75 minutes by default), and early
#: enough for the recovery to show before the demo ends.
_DEMO_INCIDENT_SPAN = (0.6, 0.78)


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.alerting import alerts_data, render_alerts
    from pipeline.httpfeed import via_collector
    from pipeline.ingest import paced
    from pipeline.runner import run_through
    from pipeline.simulate import (
        DEFAULT_EFFECTS,
        INCIDENTS,
        SimulationConfig,
        encode,
        incident,
        simulate,
    )
    from pipeline.summary import render_summary, summary_data

    settings = _settings(args)
    duration_s = args.duration * 60
    began = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=duration_s)
    effects = DEFAULT_EFFECTS
    if args.incident != "none":
        start, end = (round(share * args.duration) * 60 for share in _DEMO_INCIDENT_SPAN)
        effects = (*effects, incident(args.incident, start, end))
    config = SimulationConfig(
        customers=args.customers,
        duration_s=duration_s,
        seed=args.seed,
        start=began,
        effects=effects,
    )
    print(
        f"xp demo: {args.customers:,} customers, {args.duration:g} minutes of web, app and "
        f"support journeys, through Kafka, Faust and ClickHouse in {settings.data_dir}",
        file=sys.stderr,
    )
    if args.incident != "none":
        at = [(began + timedelta(seconds=s)).strftime("%H:%M") for s in (start, end)]
        print(
            f"incident {args.incident} from {at[0]} to {at[1]} UTC: {INCIDENTS[args.incident][0]}",
            file=sys.stderr,
        )
    events = list(simulate(config))
    result, client = asyncio.run(
        run_through(
            settings,
            paced(map(encode, events), args.rate),
            total=len(events),
            label="demo",
            via=via_collector if args.via == "http" else None,
        )
    )
    alerts = alerts_data(client)
    if args.json:
        _print_json({"run": result.as_dict(), "summary": summary_data(client), "alerts": alerts})
    else:
        print(render_summary(client))
        print(render_alerts(alerts) + "\n")
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


def cmd_serve(args: argparse.Namespace) -> int:
    from pipeline.serve import serve

    counts = asyncio.run(serve(_settings(args), args.host, args.port))
    print(
        f"xp serve stopped: {counts.get('stored', 0):,} stored, "
        f"{counts.get('duplicates', 0):,} duplicates, {counts.get('rejected', 0):,} rejected",
        file=sys.stderr,
    )
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from pipeline.collector import run_collector

    asyncio.run(run_collector(_settings(args), args.host, args.port))
    return 0


def cmd_loadtest(args: argparse.Namespace) -> int:
    from pipeline.loadtest import run_loadtest

    result = asyncio.run(
        run_loadtest(
            _settings(args),
            duration_s=args.duration,
            connections=args.connections,
            events_per_request=args.events,
        )
    )
    if args.json:
        _print_json(result)
    else:
        print(
            f"{result['accepted_eps']:,} events/s accepted, p50 {result['p50_ms']} ms, "
            f"p99 {result['p99_ms']} ms ({result['requests']:,} requests of "
            f"{result['events_per_request']} events on {result['connections']} connections "
            f"in {result['seconds']}s, {result['non_2xx']:,} not 2xx)"
        )
    return 0


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65_535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (1..65535)")
    return port


def cmd_bench(args: argparse.Namespace) -> int:
    from pipeline.bench import report, run_bench, run_scale
    from pipeline.loadtest import run_loadtest

    settings = _settings(args)
    settings = settings.model_copy(update={"data_dir": settings.data_dir / "bench"})
    result = asyncio.run(
        run_bench(
            settings,
            events=args.events,
            customers=args.customers,
            rate=args.rate,
            seconds=args.seconds,
        )
    )
    if args.workers > 1:
        result.workers = args.workers
        result.scale = asyncio.run(
            run_scale(settings, events=args.events, customers=args.customers, workers=args.workers)
        )
    result.http = asyncio.run(run_loadtest(settings, duration_s=args.http_seconds))
    print(report(result), file=sys.stderr)
    if args.json:
        _print_json(result.as_dict())
    return 0


def cmd_soak(args: argparse.Namespace) -> int:
    from pipeline.soak import report, run_soak

    settings = _settings(args)
    settings = Settings.model_validate(
        settings.model_dump()
        | {
            "data_dir": settings.data_dir / "soak",
            "journey_ttl_s": args.ttl or settings.journey_ttl_s,
        }
    )
    result = asyncio.run(
        run_soak(
            settings,
            seconds=args.seconds,
            rate=args.rate,
            arrivals_per_hour=args.arrivals,
            discard_rows=args.discard_rows,
        )
    )
    print(report(result), file=sys.stderr)
    if args.json:
        _print_json(result.as_dict())
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


def cmd_dashboards(args: argparse.Namespace) -> int:
    from pipeline.dashboards import write_dashboards

    for path in write_dashboards():
        print(f"wrote {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline.report import collect, render
    from pipeline.serve import open_reader

    settings = _settings(args)
    # A running `xp serve` holds the data directory: it answers the queries then.
    client = open_reader(settings)
    _, [(exists,)] = clickhouse.query(client, f"EXISTS DATABASE {clickhouse.DATABASE}")
    if not exists:
        raise ConfigurationError(
            f"no xp data in {settings.clickhouse_url or settings.data_dir}: "
            "run `xp demo` or `xp process FILE` first"
        )
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(collect(client)), encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size / 1024:,.0f} KiB): open it in any browser")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from pipeline.simulate import INCIDENTS

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
    p.add_argument("--customers", type=int, default=5000)
    p.add_argument("--duration", type=float, default=120, help="minutes of event time")
    p.add_argument(
        "--incident",
        choices=(*INCIDENTS, "none"),
        default="chrome-search-broken",
        help="inject a named incident for the drop alerts to find (none: steady traffic)",
    )
    p.add_argument("--rate", type=float, default=4000, help="events per second (0: unpaced)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--via",
        choices=("kafka", "http"),
        default="kafka",
        help="http: post the events to a collector, as web pages and apps would",
    )
    p.set_defaults(func=cmd_demo)

    p = with_data_dir(
        sub.add_parser("serve", help="broker, worker and collector as a local service")
    )
    p.add_argument("--host", default="127.0.0.1", help="collector address (default loopback)")
    p.add_argument("--port", type=_port, default=8080, help="collector port")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("collect", help="the HTTP collector, in front of XP_KAFKA_BOOTSTRAP")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on")
    p.add_argument("--port", type=_port, default=8080)
    p.set_defaults(func=cmd_collect)

    p = with_data_dir(sub.add_parser("loadtest", help="load the collector with wrk on loopback"))
    p.add_argument("--duration", type=float, default=10, help="seconds of load")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--events", type=int, default=50, help="events per request")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_loadtest)

    p = sub.add_parser("ingest", help="send a JSONL file to the configured Kafka")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_ingest)

    p = with_data_dir(sub.add_parser("worker", help="run the worker (long-running)"))
    p.add_argument("--until-idle", action="store_true", help="exit once everything is applied")
    p.add_argument("--metrics-port", type=int, default=0, help="serve /metrics (0: off)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_worker)

    p = with_data_dir(sub.add_parser("bench", help="measure the ceiling, the pipeline, latency"))
    p.add_argument("--events", type=int, default=300_000)
    p.add_argument("--customers", type=int, default=20_000)
    p.add_argument("--rate", type=float, default=10_000, help="events/s of the latency run")
    p.add_argument("--seconds", type=float, default=20, help="length of the latency run")
    p.add_argument("--workers", type=int, default=1, help="also run 1..N worker processes")
    p.add_argument(
        "--http-seconds", type=float, default=10, help="length of the collector load test (wrk)"
    )
    p.add_argument("--json", action="store_true", help="last stdout line is a JSON object")
    p.set_defaults(func=cmd_bench)

    p = with_data_dir(
        sub.add_parser("soak", help="churning customers for a while: is worker memory flat?")
    )
    p.add_argument("--seconds", type=float, default=240, help="wall time to run")
    p.add_argument("--rate", type=float, default=5000, help="events per second")
    p.add_argument(
        "--arrivals", type=int, default=3000, help="new customers per hour of event time"
    )
    p.add_argument(
        "--ttl", type=int, default=7200, help="XP_JOURNEY_TTL_S for the run (0: the setting)"
    )
    p.add_argument(
        "--discard-rows",
        action="store_true",
        help="store nothing: the worker's memory without the embedded ClickHouse's",
    )
    p.add_argument("--json", action="store_true", help="last stdout line is a JSON object")
    p.set_defaults(func=cmd_soak)

    p = with_data_dir(sub.add_parser("migrate", help="apply ClickHouse migrations"))
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("schemas", help="write the JSON Schema files of the event contract")
    p.set_defaults(func=cmd_schemas)

    p = sub.add_parser("dashboards", help="write the Grafana dashboards to deploy/grafana/")
    p.set_defaults(func=cmd_dashboards)

    p = with_data_dir(sub.add_parser("report", help="write a self-contained HTML report"))
    p.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = args.log_level or Settings().log_level
    if (
        args.command in {"process", "demo", "sql", "report", "serve", "loadtest", "bench", "soak"}
        and args.log_level is None
    ):
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
