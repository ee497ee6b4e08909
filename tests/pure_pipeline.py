"""The pipeline's pure stages on a JSONL file, in one process: no Kafka, no ClickHouse.

Lines go through the bulk stage's routing (`Batcher`) and the partition states in chunks
of the sizes given, and the rows are folded the way ClickHouse folds them (the newest
partial row per window and partition, the last `stage_entries` row per key, the earliest
link). That makes the oracle comparison cheap enough for a unit test, so it can run with
settings the integration tests do not use (a journey TTL of an hour) and with many batch
splits. Hour and day relations and everything ClickHouse adds are the integration tests'.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord

from pipeline.bulk import Batcher, partition_for
from pipeline.clickhouse import Rows
from pipeline.config import Settings
from pipeline.ingest import key_and_received
from pipeline.processor import PartitionState
from pipeline.windows import EXPERIENCE_COLUMNS
from tests.oracle import STAGE_COLUMNS, Expected, WindowKey, lines

_TOPIC = "touchpoints"


class PurePipeline:
    """The bulk stage's routing and one `PartitionState` per partition, fed chunk by chunk.

    A chunk is what the bulk stage drains at once: each partition gets one batch of it.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.states = {
            q: PartitionState(
                q, settings.allowed_lateness_s, settings.session_gap_s, settings.journey_ttl_s
            )
            for q in range(settings.partitions)
        }
        self._versions = dict.fromkeys(self.states, 0)
        self._offsets: dict[int, int] = {}
        self._batcher = Batcher(settings)
        self._fold = _Fold()

    def feed(self, chunk: Iterable[bytes]) -> None:
        for raw in chunk:
            self._fold.out.received += 1
            key, received = key_and_received(raw, 0)
            partition = 0 if key is None else partition_for(key.decode(), self.settings.partitions)
            offset = self._offsets[partition] = self._offsets.get(partition, -1) + 1
            self._batcher.add(_TOPIC, _record(partition, offset, received, key, raw))
        for q, value in self._batcher.drain():
            self._fold.add(self.states[q].apply(value, self._versions[q]).rows)
            self._versions[q] += 1

    def result(self) -> Expected:
        """The minute relations, events, entries, links, duplicates and rejections so far."""
        return self._fold.finish()


def run_pure(path: Path, settings: Settings, batch_sizes: Iterable[int]) -> PurePipeline:
    """Every line of `path`, `batch_sizes` lines at a time (cycled), through the pure stages."""
    pipeline = PurePipeline(settings)
    items, sizes = lines(path), itertools.cycle(batch_sizes)
    while chunk := list(itertools.islice(items, next(sizes))):
        pipeline.feed(chunk)
    return pipeline


def _record(
    partition: int, offset: int, received: int, key: bytes | None, raw: bytes
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=_TOPIC,
        partition=partition,
        offset=offset,
        timestamp=received,
        timestamp_type=0,
        key=key,
        value=raw,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(raw),
        headers=(),
    )


class _Fold:
    """Rows folded into relations as ClickHouse's engines and views fold them."""

    def __init__(self) -> None:
        self.out = Expected()
        self.stage: dict[tuple[Any, ...], tuple[int, tuple[Any, ...]]] = {}
        self.experience: dict[tuple[Any, ...], tuple[int, tuple[Any, ...]]] = {}
        self.links: dict[str, tuple[int, str]] = {}

    def add(self, rows: Rows) -> None:
        out = self.out
        for (
            event_id,
            source,
            etype,
            occurred,
            received,
            identity,
            customer,
            anonymous,
            session,
            stage,
            props,
            context,
            *_,
        ) in rows.events:
            out.events[event_id] = {
                "source": source,
                "type": etype,
                "occurred_at": occurred,
                "received_at": received,
                "identity": identity,
                "customer_id": customer,
                "anonymous_id": anonymous,
                "session_id": session,
                "stage": stage,
                "properties": orjson.loads(props),
                "context": orjson.loads(context),
            }
        out.duplicates += len(rows.duplicates)
        for _, reason, _, raw, *_ in rows.rejected:
            out.rejected[(raw, reason)] += 1
        for row in rows.stage_partials:
            *key, partition, version = row
            self._newest(self.stage, (*key[:3], partition), version, tuple(key[3:]))
        for row in rows.experience_partials:
            *key, partition, version = row
            self._newest(self.experience, (*key[:3], partition), version, tuple(key[3:]))
        # ReplacingMergeTree without a version: the row inserted last wins.
        for identity, stage, channel, entered, converted, seconds in rows.stage_entries:
            out.stage_entries[(identity, stage)] = {
                "channel": channel,
                "entered_at": entered,
                "converted": converted,
                "seconds_to_convert": seconds,
            }
        for anonymous, customer, linked_at in rows.identity_links:
            self.links[anonymous] = min(
                self.links.get(anonymous, (linked_at, customer)), (linked_at, customer)
            )

    @staticmethod
    def _newest(
        into: dict[tuple[Any, ...], tuple[int, tuple[Any, ...]]],
        key: tuple[Any, ...],
        version: int,
        values: tuple[Any, ...],
    ) -> None:
        if key not in into or into[key][0] <= version:
            into[key] = (version, values)

    def finish(self) -> Expected:
        stage: dict[WindowKey, dict[str, int]] = {}
        for (window, channel, stage_name, _), (_, values) in self.stage.items():
            row = stage.setdefault((window, channel, stage_name), dict.fromkeys(STAGE_COLUMNS, 0))
            for column, value in zip(STAGE_COLUMNS, values, strict=True):
                row[column] += value
        experience: dict[WindowKey, dict[str, int]] = {}
        for (window, channel, stage_name, _), (_, values) in self.experience.items():
            row = experience.setdefault(
                (window, channel, stage_name), dict.fromkeys(EXPERIENCE_COLUMNS, 0)
            )
            for column, value in zip(EXPERIENCE_COLUMNS, values, strict=True):
                row[column] += value
        return replace(
            self.out,
            stage_minute=stage,
            experience_minute={k: v for k, v in experience.items() if any(v.values())},
            identity_links={a: customer for a, (_, customer) in self.links.items()},
            linked_at={a: at for a, (at, _) in self.links.items()},
        )
