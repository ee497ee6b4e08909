"""Consumer progress gauges: lag, committed offset and its age, per group and partition.

A stalled pipeline shows as committed offsets that stop moving while the lag
grows (deploy/prometheus/rules.yml); neither number alone tells a stall from
a quiet hour. Every worker samples every partition of both consumer groups
with a consumer of its own that joins no group, so the numbers do not depend
on which worker owns what, and Prometheus takes the max over workers.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline import observability as obs
from pipeline.bulk import bulk_group
from pipeline.config import Settings
from pipeline.offsets import LogEnds

if TYPE_CHECKING:
    from pipeline.worker import Worker

log = logging.getLogger("xp.health")

SAMPLE_S = 5.0


class ConsumerHealth:
    """Samples the bulk group on touchpoints and the Faust group on internal batches."""

    def __init__(self, settings: Settings, bootstrap: str, worker: Worker) -> None:
        self.bootstrap = bootstrap
        self.groups = {
            bulk_group(settings): settings.touchpoints_topic,
            settings.app_id: settings.batches_topic,
        }
        self.partitions = settings.partitions
        self._views: dict[str, AIOKafkaConsumer] = {}
        self._ends = LogEnds(bootstrap, settings.fetch_max_wait_ms)
        self._ends_started = False
        #: (group, topic, partition) -> (committed offset, wall time it last moved)
        self._moved: dict[tuple[str, str, int], tuple[int, float]] = {}
        worker.app.timer(SAMPLE_S, name="xp-consumer-health")(self.sample)
        worker.app.on_before_shutdown.connect(self._close)

    async def sample(self) -> None:
        """One sample of every partition; a failed sample only leaves the gauges as they were."""
        try:
            for group, topic in self.groups.items():
                await self._sample(group, topic)
        except Exception as exc:
            log.warning("consumer health sample failed: %s", exc)

    async def _sample(self, group: str, topic: str) -> None:
        if not self._ends_started:
            await self._ends.start()
            self._ends_started = True
        view = self._views.get(group)
        if view is None:
            view = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False
            )
            await view.start()
            self._views[group] = view
        tps = [TopicPartition(topic, p) for p in range(self.partitions)]
        # Not the listed ends: the embedded broker lists them short (pipeline/offsets.py).
        ends = await self._ends.of(tps)
        now = time.monotonic()
        for tp in tps:
            committed = await view.committed(tp) or 0
            key = (group, topic, tp.partition)
            seen = self._moved.get(key)
            if seen is None or seen[0] != committed:
                self._moved[key] = seen = (committed, now)
            labels = (group, topic, str(tp.partition))
            obs.COMMITTED_OFFSET.labels(*labels).set(committed)
            obs.CONSUMER_LAG.labels(*labels).set(max(0, ends[tp] - committed))
            obs.COMMIT_AGE.labels(*labels).set(now - seen[1])

    async def _close(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        for view in self._views.values():
            await view.stop()
        self._views.clear()
        if self._ends_started:
            await self._ends.stop()
            self._ends_started = False
