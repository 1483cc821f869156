-- 004-aggregates: the daily aggregate of metrics.site_usage.
-- The tiers of metrics.server_metrics (1 minute, 5 minutes, 1 hour, 1 day)
-- are rendered by revision 0002 from the one definition in
-- sql/templates/server-metrics-aggregate.sql. Real-time (materialized_only =
-- false); created with no data; policies are set by
-- metrics.configure_policies() (sql/idempotent/policies.sql) from the catalog.

create materialized view metrics.site_usage_daily
with (timescaledb.continuous, timescaledb.materialized_only = false) as
select
    time_bucket('1 day', collected_at) as bucket,
    site_id,
    avg(memory_used_mb) as memory_avg_mb,
    max(memory_used_mb) as memory_max_mb,
    avg(cpu_percent) as cpu_avg_percent,
    max(cpu_percent) as cpu_max_percent,
    sum(bandwidth_mb) as bandwidth_total_mb,
    sum(requests) as requests_total,
    avg(response_time_ms) as response_time_avg_ms,
    100.0 * avg(is_up::int) as uptime_percent,
    count(*) as sample_count
from metrics.site_usage
group by 1, 2
with no data;
