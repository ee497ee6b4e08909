-- Drop alerts. An alert is written when it fires and again when it resolves,
-- so (alert_id, status) is the key: ReplacingMergeTree ORDER BY (alert_id,
-- status) collapses replays and keeps both transitions. Alerts are few, so
-- there is no PARTITION BY, and no TTL: they are the incident history.
CREATE TABLE IF NOT EXISTS xp.alerts_store
(
    alert_id String,
    status LowCardinality(String),
    detected_at DateTime64(3, 'UTC'),
    metric LowCardinality(String),
    channel LowCardinality(String),
    stage LowCardinality(String),
    period_start DateTime('UTC'),
    period_end DateTime('UTC'),
    observed Float64,
    baseline Float64,
    change Float64,
    segment String,
    severity LowCardinality(String),
    details String
)
ENGINE = ReplacingMergeTree
ORDER BY (alert_id, status);

CREATE VIEW IF NOT EXISTS xp.alerts AS
SELECT
    alert_id, status, detected_at, metric, channel, stage, period_start,
    period_end, observed, baseline, change, segment, severity, details
FROM xp.alerts_store FINAL;
