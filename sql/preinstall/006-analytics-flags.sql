-- 006-analytics-flags: what a planner needs to read a stored result right.
-- forecasts.is_above_threshold: the series was already at or over its
-- threshold at the last observation, so threshold_crossing_at is the observed
-- time it went over (in the past), not a predicted crossing.
-- anomalies.resolution: the aggregate the detector ran on ('5m', '1h', ...),
-- so charts plot the anomaly at the resolution it was found at (a 10-minute
-- spike is invisible in hourly means). Null for rows stored before this
-- revision; readers treat null as '1h', the detector's default.

alter table analytics.forecasts
    add column is_above_threshold boolean not null default false;

alter table analytics.anomalies
    add column resolution text check (resolution in ('1m', '5m', '1h', '1d'));
