"""Scale out and fail over mid-stream: every stored number stays exact, every partition is read.

Two `xp worker` processes share one consumer group (per stage: the bulk group on the
touchpoints topic, the Faust group on the batches topic); a third joins mid-stream, and
once it has taken partitions over and the group committed more, the rest of the input
arrives and one of the first two is SIGKILLed. The two left carry on until both groups'
committed offsets reach the end of every partition, and then stop as Ctrl-C stops them.
Each join and the death move partitions between live workers in both groups: a
partition's state must follow it through the changelog, the batches in flight when it
moved must be applied once, and a batch the dead worker stored but did not commit is
applied again by its new owner, to the same effect. The test asserts that every relation
equals the oracle's, that no stored copy of a fact disagrees with another, and that both
groups' committed offsets reach the end of every partition.

The input is fed while the workers run, at a pace, so that the stream outlasts the
third worker's start on a fast machine too; all that is left of it comes at once just
before the kill, so the kill lands mid-stream. The workers run without `--until-idle`,
which could end one during a lull in the feed; the test decides that they are done.

How the workers share the store. In production they write to one ClickHouse server. The
only ClickHouse here is chDB, which runs inside the process and locks its data
directory: a second process cannot open a directory a running worker holds (chDB fails
with "Error initializing EmbeddedServer"), and the machine has no ClickHouse server.
So each worker writes to a chDB directory of its own, and `tests.integration.stores`
unions them into one store afterwards: every row any worker inserted, in the same
ReplacingMergeTree tables. That is the store a shared server would hold, because every
storage table is keyed by the fact it records and window partials replace by version
(docs/relations.md): copies collapse there exactly as on a server, whatever the order of
the inserts. The union also makes visible what a server hides: copies of one key (and
version) written by different workers with different values, which would make the
answer depend on insert order; the test fails on any.

One thing cannot be judged on split stores: drop alerts. Only the group's leader
evaluates them, reading the relations, and here it would read only its own store: a
partition that moved away looks like traffic that stopped. The alert period is set
longer than the corpus (XP_ALERT_PERIOD_S), so no period is ever judged and `xp.alerts`
must stay empty; the detector has tests of its own (test_drop_alerts.py).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.bulk import bulk_group
from pipeline.config import Settings
from pipeline.embedded import broker
from pipeline.ingest import file_lines, produce
from pipeline.offsets import LogEnds
from pipeline.runner import STUCK_EXIT_CODE
from pipeline.topics import ensure_topics, whole_message_consumer
from tests.corpus import make_corpus
from tests.integration import stores
from tests.integration.exactness import SETTINGS, XP, oracle, problems_against

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Enough partitions that three workers each own some in both groups.
PARTITIONS = 6
LINES = 16_000
#: Lines per second fed before the rest comes at once: slower than the workers take them.
FEED_PER_S = 250.0
SEED = 6_2026
#: How long any phase may take before the test calls it a hang.
PHASE_TIMEOUT_S = 150.0
#: Short, so that a stuck worker is replaced well within a phase.
WATCHDOG_S = 30
_RESTORED = re.compile(rb"partition (\d+) (?:restored|changed elsewhere)")


@dataclass
class _Worker:
    """One `xp worker` process with a chDB directory and a log of its own."""

    name: str
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def took_over(self) -> list[int]:
        """Partitions whose state this worker (re)built from the changelog, in log order.

        The worker logs one line each time it restores a partition: the first batch of
        a partition new to it, or one that changed elsewhere while it was away.
        """
        return [int(p) for p in _RESTORED.findall(self.log.read_bytes())]


def _settings(bootstrap: str) -> Settings:
    return Settings(kafka_bootstrap=bootstrap, partitions=PARTITIONS)


class _Feeder(threading.Thread):
    """Puts the corpus on the touchpoints topic at a pace, then the rest at once on `finish`.

    The lines go in file order through `pipeline.ingest.produce`, as `xp ingest`
    sends them: the order and timestamps the oracle assumes.
    """

    def __init__(self, bootstrap: str, lines: list[bytes], per_second: float) -> None:
        super().__init__(name="feeder", daemon=True)
        self.bootstrap, self.lines, self.per_second = bootstrap, lines, per_second
        self.finish = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._feed())
        except BaseException as exc:  # handed to the test thread by `result`
            self.error = exc

    async def _paced(self) -> AsyncIterator[bytes]:
        started = time.monotonic()
        for i, line in enumerate(self.lines):
            while not self.finish.is_set() and i >= (time.monotonic() - started) * self.per_second:
                await asyncio.sleep(0.05)
            self.sent = i + 1
            yield line

    async def _feed(self) -> None:
        topic = _settings(self.bootstrap).touchpoints_topic
        async for _ in produce(self.bootstrap, topic, self._paced()):
            pass

    def result(self, timeout: float) -> int:
        """Lines on Kafka once the feed ended; raises what stopped it."""
        self.join(timeout)
        assert not self.is_alive(), f"the feed did not end within {timeout:.0f} s"
        if self.error is not None:
            raise self.error
        return self.sent


async def _offsets(bootstrap: str, group: str, topic: str) -> dict[int, tuple[int, int]]:
    """Per partition of `topic`: the offset `group` committed (0 if none), and the listed end."""
    view = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await view.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await view.end_offsets(tps)
        return {tp.partition: (await view.committed(tp) or 0, ends[tp]) for tp in tps}
    finally:
        await view.stop()


async def _log_ends(bootstrap: str, topic: str) -> dict[int, int]:
    """Per partition of `topic`, one past the offset of its last record, found by reading it all.

    Not `end_offsets`: the embedded broker reports the base offset of a
    partition's last record batch plus one there, short of the end whenever
    that batch holds more than one record.
    """
    reader = whole_message_consumer(bootstrap)
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        ends = dict.fromkeys(range(PARTITIONS), 0)
        while got := await reader.getmany(timeout_ms=1000):
            for tp, records in got.items():
                ends[tp.partition] = records[-1].offset + 1
        return ends
    finally:
        await reader.stop()


def _committed(bootstrap: str) -> int:
    """Batches the Faust group committed, over all partitions."""
    settings = _settings(bootstrap)
    offsets = asyncio.run(_offsets(bootstrap, settings.app_id, settings.batches_topic))
    return sum(c for c, _ in offsets.values())


def _behind(bootstrap: str) -> bool:
    """Whether either group has not committed up to the end of every partition yet."""
    settings = _settings(bootstrap)

    async def check() -> bool:
        ends = LogEnds(bootstrap, settings.fetch_max_wait_ms)
        await ends.start()
        try:
            for group, topic in (
                (bulk_group(settings), settings.touchpoints_topic),
                (settings.app_id, settings.batches_topic),
            ):
                last = await ends.of([TopicPartition(topic, p) for p in range(PARTITIONS)])
                offsets = await _offsets(bootstrap, group, topic)
                if any(offsets[tp.partition][0] < end for tp, end in last.items()):
                    return True
            return False
        finally:
            await ends.stop()

    return asyncio.run(check())


def _positions(bootstrap: str) -> list[str]:
    """Per group and partition, where the group is against the log end, as readable lines.

    A line says "committed" where the group has not reached the end, "empty"
    where a partition has no record at all, and "at end" otherwise.
    """
    settings = _settings(bootstrap)
    lines = []
    for group, topic in (
        (bulk_group(settings), settings.touchpoints_topic),
        (settings.app_id, settings.batches_topic),
    ):
        ends = asyncio.run(_log_ends(bootstrap, topic))
        offsets = asyncio.run(_offsets(bootstrap, group, topic))
        for partition, end in ends.items():
            done, listed = offsets[partition]
            where = f"{group} on {topic}[{partition}]"
            if end == 0:
                lines.append(f"{where}: empty, the test proves nothing there")
            elif done != end:
                lines.append(f"{where}: committed {done} of {end} (the broker lists {listed})")
            else:
                lines.append(f"{where}: at end {end}")
    return lines


def _wait(
    what: str,
    workers: list[_Worker],
    done: Callable[[], bool],
    explain: Callable[[], str] = str,
    relaunch: Callable[[_Worker], _Worker] | None = None,
) -> None:
    """Poll `done()` until true; fail if a worker exits first or it takes too long.

    A worker the watchdog ended as stuck is replaced by `relaunch`, as an
    orchestrator would (docs/reliability.md, "Batches fetched and never
    delivered"). A failure says what `explain()` returns, read before the
    workers are stopped.
    """
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    while time.monotonic() < deadline:
        for i, w in enumerate(workers):
            code = w.proc.poll()
            if code == STUCK_EXIT_CODE and relaunch is not None:
                workers[i] = relaunch(w)
                continue
            assert code is None, f"{w.name} exited with {code} while waiting for {what}"
        if done():
            return
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {PHASE_TIMEOUT_S:.0f} s\n{explain()}")


def test_workers_join_and_die_mid_stream_with_every_number_exact(tmp_path: Path) -> None:
    started = time.monotonic()
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    corpus = tmp_path / "corpus.jsonl"
    make_corpus(corpus, lines=LINES, seed=SEED, start=start)
    want = oracle(corpus, partitions=PARTITIONS)
    rng = random.Random(SEED)
    workers: list[_Worker] = []

    with broker(tmp_path / "broker") as bootstrap:
        lines = list(file_lines(corpus))
        asyncio.run(ensure_topics(bootstrap, _settings(bootstrap)))
        feeder = _Feeder(bootstrap, lines, FEED_PER_S)
        env = {
            **os.environ,
            **SETTINGS,
            "XP_PARTITIONS": str(PARTITIONS),
            "XP_KAFKA_BOOTSTRAP": bootstrap,
            # Small batches and frequent snapshots: many places for a join or a
            # death to land, snapshots compacting the changelog while partitions move.
            "XP_BATCH_MAX_EVENTS": "100",
            "XP_SNAPSHOT_EVERY_BATCHES": "5",
            # Longer than the corpus: no alert period is ever judged (see above).
            "XP_ALERT_PERIOD_S": "7200",
            "XP_WATCHDOG_S": str(WATCHDOG_S),
        }

        def launch(name: str) -> _Worker:
            data_dir = tmp_path / name
            data_dir.mkdir()
            log = data_dir / "worker.log"
            with log.open("wb") as err:
                proc = subprocess.Popen(
                    [str(XP), "worker", "--data-dir", str(data_dir)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            worker = _Worker(name, data_dir, log, proc)
            workers.append(worker)
            return worker

        def relaunch(stuck: _Worker) -> _Worker:
            return launch(f"{stuck.name}-restarted-{len(workers)}")

        try:
            feeder.start()
            first, second = launch("w1"), launch("w2")
            _wait("committed batch", workers, lambda: _committed(bootstrap) > 0)

            third = launch("w3")
            joined_at = _committed(bootstrap)
            _wait(
                "batch applied by the third worker, then more committed",
                workers,
                lambda: bool(third.took_over()) and _committed(bootstrap) > joined_at,
            )

            feeder.finish.set()
            paced = feeder.sent
            assert feeder.result(timeout=60) == LINES
            time.sleep(rng.uniform(0.2, 1.0))
            # Of the first two workers, the one that stored a batch last: the
            # likelier to hold batches applied and not committed yet.
            victim = max(first, second, key=lambda w: w.log.stat().st_mtime)
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait()
            killed_at = time.monotonic() - started
            survivors = [w for w in workers if w is not victim]

            _wait(
                "end of every partition committed",
                survivors,
                lambda: not _behind(bootstrap),
                lambda: "\n".join(_positions(bootstrap)),
                relaunch,
            )
            finished_at = time.monotonic() - started
            for w in survivors:
                w.proc.send_signal(signal.SIGINT)
            for w in survivors:
                # 130 is how `xp` ends on Ctrl-C, after storing and committing what it applied.
                code = w.proc.wait(timeout=PHASE_TIMEOUT_S)
                assert code == 130, f"{w.name} exited with {code}:\n{w.log.read_text()[-3000:]}"
        finally:
            feeder.finish.set()
            for w in workers:
                if w.proc.poll() is None:
                    w.proc.kill()
                    w.proc.wait()

        # Read again from the whole log, independently of `LogEnds`.
        positions = _positions(bootstrap)
        assert not [p for p in positions if "empty" in p], "\n".join(positions)
        assert not [p for p in positions if "committed" in p], "\n".join(positions)

    took_over = {w.name: w.took_over() for w in workers}
    merged = tmp_path / "merged"
    conflicts = stores.union([w.data_dir for w in workers], merged, tmp_path / "exports")
    assert not conflicts, "\n".join(conflicts)
    merged_at = time.monotonic() - started
    problems = problems_against(merged, want)
    assert not problems, f"partitions rebuilt per worker: {took_over}\n" + "\n\n".join(problems)
    print(
        f"rebalance test: {paced} lines paced, {victim.name} killed at {killed_at:.1f} s, done at "
        f"{finished_at:.1f} s, stores merged at {merged_at:.1f} s, all done at "
        f"{time.monotonic() - started:.1f} s; partitions rebuilt per worker {took_over}"
    )
