-- Raw facts: accepted events, rejected messages and duplicates. The pipeline
-- delivers at least once, so each store is a ReplacingMergeTree sorted by the
-- relation's key: a replay writes byte-identical rows again, background merges
-- collapse them, and the public views read with FINAL so users see one row
-- per key before any merge has run.
--
-- Monthly partitions on the time column make time-bounded scans prune whole
-- parts and let an operator drop old months cheaply. A replayed row carries
-- the same time, so its copies share a partition and merges collapse them.
-- No TTL: the contract promises rejection, never loss, and retention is an
-- operator's decision, added by a later migration.

-- ORDER BY event_id: the idempotency key of an event.
CREATE TABLE IF NOT EXISTS xp.events_store
(
    event_id String,
    source LowCardinality(String),
    type LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    identity String,
    customer_id Nullable(String),
    anonymous_id Nullable(String),
    session_id String,
    stage LowCardinality(String),
    properties String,
    context Map(String, String),
    topic LowCardinality(String),
    partition UInt32,
    offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY event_id;

-- ORDER BY (topic, partition, offset): a rejected message has no trustworthy
-- id, so its position on the source topic is its identity.
CREATE TABLE IF NOT EXISTS xp.rejected_events_store
(
    received_at DateTime64(3, 'UTC'),
    reason LowCardinality(String),
    detail String,
    raw String,
    truncated UInt8,
    topic LowCardinality(String),
    partition UInt32,
    offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (topic, partition, offset);

-- ORDER BY (topic, partition, offset): every copy of an event_id is its own
-- duplicate, told apart by where it was read from.
CREATE TABLE IF NOT EXISTS xp.duplicates_store
(
    received_at DateTime64(3, 'UTC'),
    event_id String,
    topic LowCardinality(String),
    partition UInt32,
    offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (topic, partition, offset);

CREATE VIEW IF NOT EXISTS xp.events AS
SELECT
    event_id, source, type, occurred_at, received_at, identity, customer_id,
    anonymous_id, session_id, stage, properties, context, topic, partition, offset
FROM xp.events_store FINAL;

CREATE VIEW IF NOT EXISTS xp.rejected_events AS
SELECT received_at, reason, detail, raw, truncated, topic, partition, offset
FROM xp.rejected_events_store FINAL;

CREATE VIEW IF NOT EXISTS xp.duplicates AS
SELECT received_at, event_id, topic, partition, offset
FROM xp.duplicates_store FINAL;
