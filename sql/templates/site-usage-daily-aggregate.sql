-- site-usage-daily-aggregate: the daily aggregate of metrics.site_usage
-- (metrics.site_usage_daily), rendered by rmp.migrations.render_site_usage_aggregate().
-- Revision 0002 created it from sql/preinstall/004-aggregates.sql; revision
-- 0010_interval_true_rates recreates it from here. Placeholders: {view},
-- {source} as in server-metrics-aggregate.sql, {interval_seconds} the seconds
-- each sample covers (the column metrics.site_usage.interval_seconds; in 0010's
-- downgrade the constant 300 the generator samples sites at).
--
-- requests and bandwidth_mb are counts over the sample's interval, so a day's
-- rate is its total over sampled_seconds (marts.site_usage_daily: requests per
-- minute), true at any sampling interval. Real-time, created with no data;
-- policies by metrics.configure_policies() from the catalog. Columns added
-- later go at the end (tenant.site_usage_daily is `select m.*`).

create materialized view {view}
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
    count(*) as sample_count,
    sum({interval_seconds}) as sampled_seconds
from {source}
group by 1, 2
with no data;
