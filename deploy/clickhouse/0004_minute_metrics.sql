-- Minute metrics, written as partial rows: each internal partition writes
-- the whole state of a window as one row per (window_start, channel, stage,
-- partition), versioned by the source offset it reflects. The identities of
-- two partitions never overlap, so the partitions' counts, distinct
-- customers included, add up exactly.
--
-- ReplacingMergeTree(version) ORDER BY (window_start, channel, stage,
-- partition): a restated window (a late event, a replay) replaces the row of
-- its partition instead of adding to it, and the highest offset wins whatever
-- order the writes arrive in. Monthly partitions on window_start prune time
-- ranges. window_start is in the sorting key, so a key never spans two
-- partitions. No TTL: minutes are the source of every rollup and are small.

CREATE TABLE IF NOT EXISTS xp.stage_minute_partial
(
    window_start DateTime('UTC'),
    channel LowCardinality(String),
    stage LowCardinality(String),
    events UInt64,
    customers UInt64,
    entries UInt64,
    conversions UInt64,
    partition UInt32,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_start, channel, stage, partition);

CREATE TABLE IF NOT EXISTS xp.experience_minute_partial
(
    window_start DateTime('UTC'),
    channel LowCardinality(String),
    stage LowCardinality(String),
    csat_responses UInt64,
    csat_satisfied UInt64,
    nps_responses UInt64,
    nps_promoters UInt64,
    nps_detractors UInt64,
    ces_responses UInt64,
    ces_sum UInt64,
    errors UInt64,
    crashes UInt64,
    sessions UInt64,
    crash_sessions UInt64,
    first_responses UInt64,
    first_response_ms_sum Int64,
    resolutions UInt64,
    resolution_ms_sum Int64,
    reopens UInt64,
    lcp_count UInt64,
    lcp_good UInt64,
    inp_count UInt64,
    inp_good UInt64,
    cls_count UInt64,
    cls_good UInt64,
    fcp_count UInt64,
    fcp_good UInt64,
    ttfb_count UInt64,
    ttfb_good UInt64,
    partition UInt32,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_start, channel, stage, partition);

CREATE VIEW IF NOT EXISTS xp.stage_minute AS
SELECT
    window_start,
    channel,
    stage,
    sum(events) AS events,
    sum(customers) AS customers,
    sum(entries) AS entries,
    sum(conversions) AS conversions
FROM xp.stage_minute_partial FINAL
GROUP BY window_start, channel, stage;

CREATE VIEW IF NOT EXISTS xp.experience_minute AS
SELECT
    window_start,
    channel,
    stage,
    sum(csat_responses) AS csat_responses,
    sum(csat_satisfied) AS csat_satisfied,
    sum(nps_responses) AS nps_responses,
    sum(nps_promoters) AS nps_promoters,
    sum(nps_detractors) AS nps_detractors,
    sum(ces_responses) AS ces_responses,
    sum(ces_sum) AS ces_sum,
    sum(errors) AS errors,
    sum(crashes) AS crashes,
    sum(sessions) AS sessions,
    sum(crash_sessions) AS crash_sessions,
    sum(first_responses) AS first_responses,
    sum(first_response_ms_sum) AS first_response_ms_sum,
    sum(resolutions) AS resolutions,
    sum(resolution_ms_sum) AS resolution_ms_sum,
    sum(reopens) AS reopens,
    sum(lcp_count) AS lcp_count,
    sum(lcp_good) AS lcp_good,
    sum(inp_count) AS inp_count,
    sum(inp_good) AS inp_good,
    sum(cls_count) AS cls_count,
    sum(cls_good) AS cls_good,
    sum(fcp_count) AS fcp_count,
    sum(fcp_good) AS fcp_good,
    sum(ttfb_count) AS ttfb_count,
    sum(ttfb_good) AS ttfb_good
FROM xp.experience_minute_partial FINAL
GROUP BY window_start, channel, stage;
