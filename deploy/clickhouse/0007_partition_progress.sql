-- How far each internal partition's data is stored, in event time: the first
-- and the latest minute it wrote. A partition writes the window of every event
-- it accepts, so its latest window is its watermark floored to the minute.
--
-- The drop detector judges a period only once every partition has passed it,
-- so a backfill whose partitions run at different speeds is judged on complete
-- minutes, as live traffic is; dashboards read it as pipeline freshness. max and
-- min need no FINAL: a replaced row carries the same window_start.
CREATE VIEW IF NOT EXISTS xp.partition_progress AS
SELECT
    partition,
    min(window_start) AS first_window,
    max(window_start) AS latest_window
FROM xp.stage_minute_partial
GROUP BY partition;
