"""Every Kafka topic xp uses, created in one place with the configs it relies on.

The embedded broker reports only configs set explicitly, and a real cluster's
defaults vary, so each topic is created with the settings its users depend on.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from pipeline.config import Settings

log = logging.getLogger("xp.topics")

#: Internal batches of `batch_max_events` events (and snapshot chunks) stay well below this.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: The codec of what xp writes to its own topics: internal batches, the state changelog and
#: dead letters. They are JSON and shrink about eightfold. Measured here on 300,000 events:
#: zstd costs the bulk stage about 1.2 µs an event and saves the broker about 3 (it handles
#: every byte it stores and serves), and the pipeline moved about 15% more events on the
#: same two cores. The public touchpoints topic takes whatever its producers send.
COMPRESSION = "zstd"
_WEEK_MS = str(7 * 24 * 3600 * 1000)


def whole_message_consumer(bootstrap: str, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer that commits only when told and takes any message xp writes in one fetch.

    aiokafka's default fetch sizes are far below an internal batch, which then
    could not be read at all.
    """
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
        fetch_max_bytes=MAX_MESSAGE_BYTES,
        **options,
    )


def topic_specs(settings: Settings) -> list[NewTopic]:
    """Touchpoints, internal batches and dead letters share one partition count.

    Internal partition q holds the identities hashed to q; using the same count
    everywhere keeps the mapping easy to reason about when scaling.
    """
    common = {"cleanup.policy": "delete", "retention.ms": _WEEK_MS}
    return [
        NewTopic(settings.touchpoints_topic, settings.partitions, 1, topic_configs=common),
        NewTopic(
            settings.batches_topic,
            settings.partitions,
            1,
            topic_configs={
                **common,
                "max.message.bytes": str(MAX_MESSAGE_BYTES),
                # Kept as the producer compressed it, not recompressed by the broker.
                "compression.type": "producer",
            },
        ),
        NewTopic(settings.rejected_topic, settings.partitions, 1, topic_configs=common),
        # Drop alerts are few and read by people's tools: one partition keeps
        # every alert's firing and resolved records in the order they happened.
        NewTopic(settings.alerts_topic, 1, 1, topic_configs=common),
    ]


async def ensure_topics(bootstrap: str, settings: Settings) -> None:
    """Create missing topics; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topic_specs(settings) if t.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                log.info("topics were created concurrently")
            log.info("created topics %s", ", ".join(t.name for t in missing))
    finally:
        await admin.close()
