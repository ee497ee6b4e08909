-- Journey facts. Both tables are small (a few rows per identity) and their
-- rows are never bounded in time, so they have no PARTITION BY and no TTL.

-- ReplacingMergeTree ORDER BY (identity, stage): an entry is an identity's
-- first event of a stage, ever, and all events of an identity are processed
-- on one partition, so a replay can only write the same row again.
CREATE TABLE IF NOT EXISTS xp.stage_entries_store
(
    identity String,
    stage LowCardinality(String),
    channel LowCardinality(String),
    entered_at DateTime64(3, 'UTC'),
    converted UInt8,
    seconds_to_convert Nullable(Float64)
)
ENGINE = ReplacingMergeTree
ORDER BY (identity, stage);

-- ReplacingMergeTree ORDER BY (anonymous_id, customer_id), one column more
-- than the relation's key: a link is routed by its customer, so two customers
-- seen on one device are linked on two partitions, each believing its link is
-- the first. Replays of one link collapse, links to different customers are
-- all kept, and the view picks the earliest, which a merge keyed by
-- anonymous_id alone could have thrown away.
CREATE TABLE IF NOT EXISTS xp.identity_links_store
(
    anonymous_id String,
    customer_id String,
    linked_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (anonymous_id, customer_id);

CREATE VIEW IF NOT EXISTS xp.stage_entries AS
SELECT identity, stage, channel, entered_at, converted, seconds_to_convert
FROM xp.stage_entries_store FINAL;

-- The first link wins: the smallest (linked_at, customer_id), so that ties
-- never depend on insert order.
CREATE VIEW IF NOT EXISTS xp.identity_links AS
SELECT
    anonymous_id,
    tupleElement(first_link, 2) AS customer_id,
    tupleElement(first_link, 1) AS linked_at
FROM
(
    SELECT anonymous_id, min((linked_at, customer_id)) AS first_link
    FROM xp.identity_links_store
    GROUP BY anonymous_id
);
