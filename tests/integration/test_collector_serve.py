"""`xp serve` end to end: HTTP in, ClickHouse out, through the real broker and worker.

One service runs for the module. Every test records in the ledger what it sent
and what the collector answered; the last test stops the service with SIGTERM
right after a final request and checks that ClickHouse holds exactly the
accepted events, exactly the malformed ones as rejected, and nothing of any
refused request.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.collector import ticket_event
from pipeline.embedded import free_port
from pipeline.validate import timestamp_ms
from tests.integration.exactness import _ms

pytestmark = pytest.mark.integration

XP = Path(sys.executable).parent / "xp"
KEYS = {"web": "web-key", "app": "app-key", "support": "support-key"}
ORIGIN = "https://shop.example"


@dataclass
class Service:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path

    def xp(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(XP), *args, "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def rows(self, sql: str) -> list[dict[str, Any]]:
        done = self.xp("sql", "--json", sql)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


@dataclass
class Ledger:
    """What the tests sent, by what should become of it."""

    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejected: Counter[tuple[bytes, str]] = field(default_factory=Counter)
    refused: set[str] = field(default_factory=set)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    data_dir = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {
        **os.environ,
        "XP_COLLECTOR_KEYS": ",".join(f"{s}:{k}" for s, k in KEYS.items()),
        "XP_COLLECTOR_CORS_ORIGINS": ORIGIN,
    }
    log = data_dir / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(XP), "serve", "--data-dir", str(data_dir), "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while call(url, "GET", "/readyz")[0] != 200:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "xp serve not ready:\n" + log.read_text()
            time.sleep(0.2)
        yield Service(url, data_dir, process, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger()


def call(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(f"{url}{path}", data=body, method=method)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, answer_headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, answer_headers, raw = exc.code, dict(exc.headers), exc.read()
    except OSError:
        return 0, {}, None
    is_json = answer_headers.get("Content-Type", "").startswith("application/json")
    return status, answer_headers, orjson.loads(raw) if is_json and raw else raw


def post(
    service: Service,
    body: bytes,
    *,
    key: str | None = KEYS["web"],
    content_type: str = "application/json",
    path: str = "/v1/events",
    **headers: str,
) -> tuple[int, dict[str, str], Any]:
    sent = {"Content-Type": content_type, **{k.replace("_", "-"): v for k, v in headers.items()}}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    return call(service.url, "POST", path, body, sent)


_counter = iter(range(1_000_000))


def event(source: str, type_: str, identity: str, **properties: Any) -> dict[str, Any]:
    """A valid event with a fresh id and a time a few seconds ago, in milliseconds."""
    moment = datetime.now(UTC) - timedelta(seconds=5)
    return {
        "event_id": str(uuid.uuid4()),
        "source": source,
        "type": type_,
        "occurred_at": moment.isoformat(timespec="milliseconds"),
        "customer_id" if identity.startswith("c-") else "anonymous_id": identity,
        "context": {"country": "BR", "n": str(next(_counter))},
        "properties": properties,
    }


def web_views(count: int, prefix: str = "d") -> list[dict[str, Any]]:
    return [event("web", "page_view", f"{prefix}-{i % 5}", path=f"/{i}") for i in range(count)]


def accept(
    ledger: Ledger, events: list[dict[str, Any]], answer: tuple[int, dict[str, str], Any]
) -> None:
    status, _, body = answer
    assert status == 202, body
    assert (body["accepted"], body["rejected"], body["errors"]) == (len(events), 0, []), body
    ledger.accepted.update((e["event_id"], e) for e in events)


def ndjson(events: list[dict[str, Any]], newline: bytes = b"\n") -> bytes:
    return newline.join(orjson.dumps(e) for e in events)


def test_single_batch_ndjson_and_gzip_bodies_are_accepted(service: Service, ledger: Ledger) -> None:
    single = event("web", "signup", "c-single")
    accept(ledger, [single], post(service, orjson.dumps(single)))

    batch = [
        event("app", "app_open", "d-app"),
        event("app", "screen_view", "d-app", screen="home"),
        event("app", "crash", "c-app", message="boom"),
    ]
    accept(ledger, batch, post(service, orjson.dumps(batch), key=KEYS["app"]))

    lines = web_views(6, "nd")
    body = ndjson(lines, b"\r\n") + b"\r\n\r\n"
    accept(ledger, lines, post(service, body, content_type="application/x-ndjson"))

    zipped = [event("support", "csat_submitted", "c-zip", score=4) for _ in range(3)]
    answer = post(
        service,
        gzip.compress(ndjson(zipped)),
        key=KEYS["support"],
        content_type="application/x-ndjson",
        Content_Encoding="gzip",
    )
    accept(ledger, zipped, answer)
    zipped_array = web_views(4, "gz")
    answer = post(service, gzip.compress(orjson.dumps(zipped_array)), Content_Encoding="gzip")
    accept(ledger, zipped_array, answer)


def test_malformed_events_are_answered_and_stored_as_rejected(
    service: Service, ledger: Ledger
) -> None:
    good = event("web", "click", "c-mixed", target="buy")
    missing = {"source": "web", "type": "page_view"}
    unknown = {**event("web", "teleport", "c-mixed")}
    status, _, body = post(service, orjson.dumps([good, missing, unknown, 5]))
    assert status == 202, body
    assert (body["received"], body["accepted"], body["rejected"]) == (4, 1, 3)
    assert [(e["index"], e["reason"]) for e in body["errors"]] == [
        (1, "missing_field"),
        (2, "unknown_type"),
        (3, "not_an_object"),
    ]
    assert all(e["detail"] for e in body["errors"])
    ledger.accepted[good["event_id"]] = good
    for item, reason in (
        (missing, "missing_field"),
        (unknown, "unknown_type"),
        (5, "not_an_object"),
    ):
        ledger.rejected[orjson.dumps(item), reason] += 1

    broken = b'{"event_id": "x", "source": "web"'
    valid = event("web", "search", "d-nd", query="shoes")
    status, _, body = post(
        service, broken + b"\n" + orjson.dumps(valid), content_type="application/x-ndjson"
    )
    assert status == 202, body
    assert [(e["index"], e["reason"]) for e in body["errors"]] == [(0, "invalid_json")]
    ledger.accepted[valid["event_id"]] = valid
    ledger.rejected[broken, "invalid_json"] += 1


def test_ticket_webhooks_become_support_events(service: Service, ledger: Ledger) -> None:
    now = (datetime.now(UTC) - timedelta(seconds=5)).isoformat(timespec="milliseconds")
    ticket = {"id": 4711, "channel": "email", "requester": {"id": 9, "external_id": "c-ticket"}}
    payloads: list[dict[str, Any]] = [
        {"id": f"{uuid.uuid4()}", "type": "ticket.created", "time": now, "ticket": ticket},
        {
            "id": f"{uuid.uuid4()}",
            "type": "ticket.comment_added",
            "time": now,
            "ticket": ticket,
            "comment": {"public": True, "author": {"role": "agent"}},
        },
        {
            "id": f"{uuid.uuid4()}",
            "type": "ticket.comment_added",
            "time": now,
            "ticket": ticket,
            "comment": {"author": {"role": "end_user"}},
        },
        {
            "id": f"{uuid.uuid4()}",
            "type": "ticket.satisfaction_rated",
            "time": now,
            "ticket": ticket,
            "rating": {"score": "good"},
        },
    ]
    status, _, body = post(
        service, orjson.dumps(payloads), key=KEYS["support"], path="/v1/webhooks/tickets"
    )
    assert status == 202, body
    assert (body["accepted"], body["rejected"], [i["index"] for i in body["ignored"]]) == (
        3,
        0,
        [2],
    )
    for payload in (payloads[0], payloads[1], payloads[3]):
        mapped = ticket_event(payload)
        assert isinstance(mapped, dict)
        ledger.accepted[mapped["event_id"]] = mapped


REFUSALS = {
    "unknown key": (401, "unauthorized", {"key": "not-a-key"}),
    "no key": (401, "unauthorized", {"key": None}),
    "web key, app event": (403, "forbidden", {"source": "app"}),
    "web key, ticket webhook": (403, "forbidden", {"path": "/v1/webhooks/tickets"}),
    "oversized body": (413, "body_too_large", {"pad": 2_000}),
    "oversized after gzip": (413, "body_too_large", {"pad": 2_000, "gzip": True}),
    "too many events": (413, "too_many_events", {"count": 1_001}),
    "malformed JSON": (400, "invalid_json", {"truncate": True}),
    "unsupported type": (415, "unsupported_media_type", {"content_type": "text/csv"}),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_requests_get_their_status_and_store_nothing(
    service: Service, ledger: Ledger, case: str
) -> None:
    status, code, how = REFUSALS[case]
    events = web_views(how.get("count", 700), "refused")
    if "source" in how:
        events[-1] = event(how["source"], "app_open", "d-refused")
    for e in events:
        e["properties"]["pad"] = "x" * how.get("pad", 0)
    ledger.refused.update(e["event_id"] for e in events)
    body = orjson.dumps(events)
    if how.get("truncate"):
        body = body[:-1]
    headers = {"Content_Encoding": "gzip"} if how.get("gzip") else {}
    answer = post(
        service,
        gzip.compress(body) if how.get("gzip") else body,
        key=how.get("key", KEYS["web"]),
        content_type=how.get("content_type", "application/json"),
        path=how.get("path", "/v1/events"),
        **headers,
    )
    assert (answer[0], answer[2]["error"]) == (status, code), answer[2]
    assert answer[2]["message"]
    if status == 401:  # the same words whatever was wrong with the key
        assert answer[2]["message"] == "a valid API key is required"


def test_cors_health_readiness_and_metrics(service: Service) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    status, headers, _ = call(service.url, "OPTIONS", "/v1/events", headers=preflight)
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Authorization" in headers["Access-Control-Allow-Headers"]
    status, _, _ = call(service.url, "OPTIONS", "/v1/events", headers={"Origin": "https://evil"})
    assert status == 403
    status, headers, _ = post(service, b"{}", key="nope", Origin=ORIGIN)
    assert (status, headers["Access-Control-Allow-Origin"]) == (401, ORIGIN)

    assert call(service.url, "GET", "/healthz")[0] == 200
    assert call(service.url, "GET", "/readyz")[0] == 200
    status, _, text = call(service.url, "GET", "/metrics")
    metrics = text.decode()
    assert status == 200
    assert 'xp_collector_requests_total{route="events",status="401"}' in metrics
    assert 'xp_collector_rejects_total{reason="unknown_type"} 1.0' in metrics
    assert "xp_collector_request_seconds_bucket" in metrics
    assert "xp_events_stored_total" in metrics  # the worker's, from the same process


def test_sql_is_answered_read_only_by_the_running_service(service: Service, ledger: Ledger) -> None:
    deadline = time.monotonic() + 60
    while service.rows("SELECT count() AS n FROM xp.events")[0]["n"] < len(ledger.accepted):
        assert time.monotonic() < deadline, "the accepted events did not arrive"
        time.sleep(0.5)
    refused = service.xp("sql", "TRUNCATE TABLE xp.events_store")
    assert refused.returncode == 2
    assert "answers read queries only" in refused.stderr
    refused = service.xp("sql", "SELECT 1 SETTINGS readonly = 0")
    assert refused.returncode == 2 and "readonly" in refused.stderr
    writer = service.xp("serve", "--port", "1")
    assert writer.returncode == 2
    assert f"xp serve (pid {service.process.pid}) holds" in writer.stderr


def test_sigterm_stores_everything_accepted_exactly(service: Service, ledger: Ledger) -> None:
    last = web_views(300, "last")
    accept(ledger, last, post(service, ndjson(last), content_type="application/x-ndjson"))
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=120) == 0, service.log.read_text()
    assert not (service.data_dir / "serve.json").exists()

    stored = service.rows(
        "SELECT event_id, source, type, occurred_at, identity, properties, context FROM xp.events"
    )
    assert len(stored) == len({row["event_id"] for row in stored})
    assert {row["event_id"] for row in stored} == set(ledger.accepted)
    for row in stored:
        sent = ledger.accepted[row["event_id"]]
        assert (row["source"], row["type"]) == (sent["source"], sent["type"])
        assert row["identity"] == (sent.get("customer_id") or sent.get("anonymous_id"))
        assert _ms(row["occurred_at"]) == timestamp_ms(sent["occurred_at"])
        assert json.loads(row["properties"]) == sent["properties"]
        assert row["context"] == sent.get("context", {})

    rejected = service.rows("SELECT raw, reason FROM xp.rejected_events")
    assert Counter((r["raw"].encode(), r["reason"]) for r in rejected) == ledger.rejected
    assert service.rows("SELECT count() AS n FROM xp.duplicates")[0]["n"] == 0
