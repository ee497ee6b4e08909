"""The collector under load: `wrk` on loopback posts NDJSON batches for a fixed time.

A real HTTP load generator, not Python clients, so that what is measured is
the collector and not the load generator. The collector runs in this process
in front of Kafka (the embedded broker unless `XP_KAFKA_BOOTSTRAP` is set),
with its real acks=all delivery; the worker does not run, since it is measured
by the pipeline's own benchmark and would compete for the same two cores. The
rate limit is lifted for the run: the load test measures throughput, not the
limiter. `xp bench` calls `run_loadtest`; `xp loadtest` runs it alone.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any

from pipeline.collector import ApiKeys, Collector
from pipeline.config import Settings
from pipeline.embedded import kafka
from pipeline.errors import ConfigurationError, XpError
from pipeline.topics import ensure_topics

# Every request is a batch of distinct, valid page views: the ids count up per
# wrk thread, under a prefix drawn for the run.
_SCRIPT = Template(r"""
local per_request = $events
local counter = 0
local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-ndjson"
  wrk.headers["Authorization"] = "Bearer $key"
end

function request()
  local lines = {}
  for i = 1, per_request do
    counter = counter + 1
    lines[i] = string.format(
      '{"event_id":"$run-%04x-4000-8000-%012x","source":"web","type":"page_view",' ..
      '"occurred_at":"$occurred","anonymous_id":"load-%d","properties":{"path":"/p/%d"}}',
      thread_id, counter, counter % 10000, i)
  end
  return wrk.format(nil, nil, nil, table.concat(lines, "\n"))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "XP_LOADTEST requests=%d non2xx=%d socket_errors=%d duration_us=%d p50_us=%d p99_us=%d\n",
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99)))
end
""")
_RESULT = re.compile(r"^XP_LOADTEST (.*)$", re.MULTILINE)


async def run_loadtest(
    settings: Settings,
    *,
    duration_s: float = 10.0,
    connections: int = 16,
    events_per_request: int = 50,
) -> dict[str, Any]:
    """Load the collector for `duration_s`; events/s it acknowledged and latency percentiles.

    `accepted_eps` counts only events answered with 202, that is acknowledged
    by Kafka; `p99_ms` is wrk's 99th percentile of request latency.
    """
    wrk = shutil.which("wrk")
    if wrk is None:
        raise ConfigurationError("the load test needs wrk: run `make system-deps`")
    if not 1 <= events_per_request <= settings.collector_max_events:
        raise ConfigurationError(
            f"events per request must be within 1..{settings.collector_max_events}"
        )
    key = secrets.token_urlsafe(18)
    unlimited = settings.model_copy(
        update={"collector_rate_per_key": 1e12, "collector_burst": settings.collector_max_events}
    )
    script = _SCRIPT.substitute(
        events=events_per_request,
        key=key,
        run=secrets.token_hex(4),
        occurred=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    )
    with kafka(unlimited) as bootstrap, tempfile.TemporaryDirectory() as tmp:
        await ensure_topics(bootstrap, unlimited)
        collector = Collector(unlimited, bootstrap, ApiKeys([("web", key)]))
        url = await collector.start("127.0.0.1", 0)
        try:
            path = Path(tmp) / "post.lua"
            path.write_text(script, encoding="utf-8")
            output = await _wrk(wrk, path, f"{url}/v1/events", duration_s, connections)
        finally:
            await collector.stop()
    found = _RESULT.search(output)
    if found is None:
        raise XpError(f"wrk printed no result:\n{output[-2000:]}")
    numbers = {name: int(value) for name, value in re.findall(r"(\w+)=(\d+)", found.group(1))}
    seconds = numbers["duration_us"] / 1e6
    accepted_requests = numbers["requests"] - numbers["non2xx"]
    return {
        "accepted_eps": round(accepted_requests * events_per_request / seconds),
        "p50_ms": round(numbers["p50_us"] / 1000, 2),
        "p99_ms": round(numbers["p99_us"] / 1000, 2),
        "requests": numbers["requests"],
        "non_2xx": numbers["non2xx"],
        "socket_errors": numbers["socket_errors"],
        "seconds": round(seconds, 2),
        "connections": connections,
        "events_per_request": events_per_request,
    }


async def _wrk(wrk: str, script: Path, url: str, duration_s: float, connections: int) -> str:
    process = await asyncio.create_subprocess_exec(
        wrk,
        "--threads",
        "1",
        "--connections",
        str(connections),
        "--duration",
        f"{max(1, round(duration_s))}s",
        "--timeout",
        "10s",
        "--script",
        str(script),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=duration_s + 30)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise XpError(f"wrk did not finish within {duration_s + 30:.0f}s") from None
    if process.returncode != 0:
        raise XpError(f"wrk exited with code {process.returncode}:\n{output.decode()[-2000:]}")
    return output.decode()
