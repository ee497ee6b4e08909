-- Hourly and daily rollups, computed when queried so that they can never
-- disagree with the minutes. Every count is a sum of minute rows, except
-- customers: distinct identities do not add up across minutes (one customer
-- active in two minutes of an hour is one customer of the hour), so it is
-- counted exactly from the accepted events. Those are read from the store
-- without FINAL because copies of an event carry the same identity, time,
-- source and stage, and cannot change a distinct count. A WHERE on
-- window_start reaches both sides of the join, so a dashboard's time range
-- bounds both scans. GROUP BY names the output columns, so window_start there
-- is the truncated time.

CREATE VIEW IF NOT EXISTS xp.stage_hour AS
SELECT window_start, channel, stage, events, customers, entries, conversions
FROM
(
    SELECT
        toStartOfHour(window_start) AS window_start,
        channel,
        stage,
        sum(events) AS events,
        sum(entries) AS entries,
        sum(conversions) AS conversions
    FROM xp.stage_minute
    GROUP BY window_start, channel, stage
) AS totals
LEFT JOIN
(
    SELECT
        toStartOfHour(toDateTime(occurred_at, 'UTC')) AS window_start,
        source AS channel,
        stage,
        uniqExact(identity) AS customers
    FROM xp.events_store
    GROUP BY window_start, channel, stage
) AS distinct_customers USING (window_start, channel, stage);

CREATE VIEW IF NOT EXISTS xp.stage_day AS
SELECT window_start, channel, stage, events, customers, entries, conversions
FROM
(
    SELECT
        toStartOfDay(window_start) AS window_start,
        channel,
        stage,
        sum(events) AS events,
        sum(entries) AS entries,
        sum(conversions) AS conversions
    FROM xp.stage_minute
    GROUP BY window_start, channel, stage
) AS totals
LEFT JOIN
(
    SELECT
        toStartOfDay(toDateTime(occurred_at, 'UTC')) AS window_start,
        source AS channel,
        stage,
        uniqExact(identity) AS customers
    FROM xp.events_store
    GROUP BY window_start, channel, stage
) AS distinct_customers USING (window_start, channel, stage);

CREATE VIEW IF NOT EXISTS xp.experience_hour AS
SELECT
    toStartOfHour(window_start) AS window_start,
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
FROM xp.experience_minute
GROUP BY window_start, channel, stage;

CREATE VIEW IF NOT EXISTS xp.experience_day AS
SELECT
    toStartOfDay(window_start) AS window_start,
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
FROM xp.experience_minute
GROUP BY window_start, channel, stage;
