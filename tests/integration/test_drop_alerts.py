"""Acceptance of the drop alerts, end to end: corpus → pipeline → `xp.alerts` and Kafka.

The corpora come from tests/drop_corpus.py, a generator that shares nothing
with the simulator the detector's defaults were tuned on (other segments,
sizes, seeds and another way of breaking a stage). Everything runs through
the real pipeline in subprocesses, and alerts are read back with `xp sql`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.config import Settings
from pipeline.embedded import broker
from pipeline.ingest import file_lines, produce
from pipeline.topics import ensure_topics
from tests.drop_corpus import Drop, write_corpus
from tests.integration.exactness import SETTINGS, XP, xp

pytestmark = pytest.mark.integration

ALERTS = (
    "SELECT alert_id, status, detected_at, metric, channel, stage, period_start, period_end,"
    " segment, severity FROM xp.alerts ORDER BY detected_at, alert_id, status"
)
#: The acceptance bound: alerted within this much event time after the drop starts.
WITHIN = timedelta(minutes=15)


def _alerts(data_dir: Path) -> list[dict[str, Any]]:
    out = xp("sql", "--data-dir", str(data_dir), "--json", ALERTS, timeout=120)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _process(corpus: Path, data_dir: Path) -> None:
    out = xp("process", str(corpus), "--data-dir", str(data_dir), "--json", timeout=900)
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["stored"] == summary["received"], summary


def _time(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _start(minutes: int) -> datetime:
    """Recent enough for the clock-skew check, old enough to have ended."""
    return datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=minutes + 5)


def test_steady_three_hours_of_several_thousand_customers_raise_no_alert(tmp_path: Path) -> None:
    corpus = tmp_path / "steady.jsonl"
    write_corpus(corpus, customers=6500, start=_start(180), duration=timedelta(hours=3), seed=8086)
    _process(corpus, tmp_path / "data")
    assert _alerts(tmp_path / "data") == []


@dataclass(frozen=True)
class Case:
    name: str
    customers: int
    minutes: int
    seed: int
    channel: str
    dimension: str
    value: str
    factor: float
    at_minute: int


CASES = (
    Case("web-country", 8000, 150, 4711, "web", "country", "US", 0.1, 95),
    Case("app-version", 7500, 160, 1312, "app", "app_version", "7.0.1", 0.2, 100),
)


@dataclass(frozen=True)
class Processed:
    corpus: Path
    data_dir: Path
    drop: Drop
    alerts: list[dict[str, Any]]


def _run_case(root: Path, case: Case) -> Processed:
    start = _start(case.minutes)
    began = start + timedelta(minutes=case.at_minute)
    drop = Drop(
        case.channel,
        "consideration",
        case.dimension,
        case.value,
        began,
        began + timedelta(minutes=30),
        case.factor,
    )
    corpus = root / f"{case.name}.jsonl"
    write_corpus(
        corpus,
        customers=case.customers,
        start=start,
        duration=timedelta(minutes=case.minutes),
        seed=case.seed,
        drop=drop,
    )
    data_dir = root / f"{case.name}-data"
    _process(corpus, data_dir)
    return Processed(corpus, data_dir, drop, _alerts(data_dir))


@pytest.fixture(scope="module")
def web_drop(tmp_path_factory: pytest.TempPathFactory) -> Processed:
    """The first case, processed once: the live-worker test compares against it."""
    return _run_case(tmp_path_factory.mktemp("web-drop"), CASES[0])


def _check_drop(processed: Processed, case: Case) -> None:
    drop = processed.drop
    mine = [
        a
        for a in processed.alerts
        if (a["metric"], a["channel"], a["stage"]) == ("conversion", drop.channel, drop.stage)
    ]
    others = [a for a in processed.alerts if a not in mine]
    assert not others, f"alerts on series the drop did not touch: {others}"
    assert len({a["alert_id"] for a in mine}) == 1, f"one episode, one alert: {mine}"
    firing = next(a for a in mine if a["status"] == "firing")
    detected = _time(firing["detected_at"])
    assert drop.start < detected <= drop.start + WITHIN, (
        f"{case.name}: drop at {drop.start:%H:%M}, alerted at {detected:%H:%M}"
    )
    assert firing["segment"] == f"{drop.dimension}={drop.value}", firing
    resolved = [a for a in mine if a["status"] == "resolved"]
    assert resolved, "the recovery after the drop resolves the alert"
    assert _time(resolved[0]["detected_at"]) >= drop.end


def test_a_drop_of_web_conversion_in_one_country_is_alerted_and_named(web_drop: Processed) -> None:
    _check_drop(web_drop, CASES[0])


def test_a_drop_of_app_conversion_in_one_version_is_alerted_and_named(tmp_path: Path) -> None:
    _check_drop(_run_case(tmp_path, CASES[1]), CASES[1])


async def _produce(bootstrap: str, corpus: Path) -> None:
    await ensure_topics(bootstrap, Settings(kafka_bootstrap=bootstrap))
    async for _ in produce(bootstrap, Settings().touchpoints_topic, file_lines(corpus)):
        pass


async def _alert_events(bootstrap: str) -> list[dict[str, Any]]:
    """Every event on the alerts topic, in order."""
    topic = TopicPartition(Settings().alerts_topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([topic])
        await consumer.seek_to_beginning(topic)
        end = (await consumer.end_offsets([topic]))[topic]
        events = []
        while await consumer.position(topic) < end:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                events.extend(json.loads(r.value) for r in records)
        return events
    finally:
        await consumer.stop()


def test_a_live_worker_raises_the_same_alerts_and_publishes_them(
    web_drop: Processed, tmp_path: Path
) -> None:
    """The long-running worker, judging periods as its partitions move on, agrees with
    the backfill of the same file, and every alert record is also on Kafka."""
    data_dir = tmp_path / "data"
    with broker(tmp_path / "broker") as bootstrap:
        asyncio.run(_produce(bootstrap, web_drop.corpus))
        env = {**os.environ, **SETTINGS, "XP_KAFKA_BOOTSTRAP": bootstrap}
        worker = subprocess.run(
            [str(XP), "worker", "--data-dir", str(data_dir), "--until-idle", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert worker.returncode == 0, worker.stderr[-3000:]
        events = asyncio.run(_alert_events(bootstrap))

    stored = _alerts(data_dir)
    assert stored == web_drop.alerts
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events:
        last[(event["alert_id"], event["status"])] = event
    assert set(last) == {(a["alert_id"], a["status"]) for a in stored}
    for alert in stored:
        event = last[(alert["alert_id"], alert["status"])]
        assert event["segment"] == alert["segment"]
        assert event["details"]["candidates"], "the runners-up travel with the alert"
