-- server-metrics-aggregate: the ONE definition of every tier of metrics.server_metrics
-- (server_metrics_1m, _5m, _1h, _1d ... : the tiers in rmp/catalog.py TIERS).
-- rmp.migrations.create_tier() renders it per tier; `\d+ metrics.server_metrics_1h`
-- shows the result. Placeholders: {view} the tier's view, {bucket_width} its
-- bucket ('1 hour'), {source} the raw hypertable (or, when a revision rebuilds a
-- tier, the raw rows it recomputes), {interval_seconds} the seconds each sample
-- covers: the column metrics.server_metrics.interval_seconds from revision
-- 0010_interval_true_rates on; before it (revision 0002, and 0010's downgrade)
-- the constant 30 every sample was assumed to cover. {cpu_percent}, {memory_used_bytes} ...:
-- the metric columns of the source, or from revision 0012_compact_server_samples on the
-- expressions that read them from metrics.server_samples (rmp/compact.py).
--
-- Rates are true to the interval: disk and network byte columns are deltas over
-- the sample's interval, so a sample's rate is bytes / interval_seconds
-- (min, max and percentiles are over those per-sample rates), and a bucket's
-- average rate is its bytes over the seconds its samples cover,
-- sum(bytes) / sum(interval_seconds) (time-weighted: a 60 s sample counts six
-- times a 10 s one, as it covers six times the time). sampled_seconds is that
-- denominator, so coarser roll-ups weight averages by it.
--
-- Every tier reads the RAW hypertable, never a finer tier: percentiles
-- (percentile_cont) are exact per bucket, which averaging finer percentiles
-- would not be. Real-time (materialized_only = false): dashboards see the
-- not-yet-materialized tail too. Created with no data; refresh, compression
-- and retention policies are set by metrics.configure_policies()
-- (sql/idempotent/policies.sql) from the catalog. Columns added later go at
-- the end: the tenant views (`select m.*`) are replaced in place.

create materialized view {view}
with (timescaledb.continuous, timescaledb.materialized_only = false) as
select
    time_bucket({bucket_width}, collected_at) as bucket,
    server_id,
    count(*) as sample_count,
    avg({cpu_percent}) as cpu_avg_percent,
    min({cpu_percent}) as cpu_min_percent,
    max({cpu_percent}) as cpu_max_percent,
    percentile_cont(0.50) within group (order by {cpu_percent}) as cpu_p50_percent,
    percentile_cont(0.95) within group (order by {cpu_percent}) as cpu_p95_percent,
    percentile_cont(0.99) within group (order by {cpu_percent}) as cpu_p99_percent,
    avg({memory_used_bytes}::double precision) as memory_used_avg_bytes,
    min({memory_used_bytes}::double precision) as memory_used_min_bytes,
    max({memory_used_bytes}::double precision) as memory_used_max_bytes,
    percentile_cont(0.50) within group (order by {memory_used_bytes}::double precision) as memory_used_p50_bytes,
    percentile_cont(0.95) within group (order by {memory_used_bytes}::double precision) as memory_used_p95_bytes,
    percentile_cont(0.99) within group (order by {memory_used_bytes}::double precision) as memory_used_p99_bytes,
    avg({memory_percent}) as memory_avg_percent,
    max({memory_percent}) as memory_max_percent,
    avg({disk_used_bytes}::double precision) as disk_used_avg_bytes,
    min({disk_used_bytes}::double precision) as disk_used_min_bytes,
    max({disk_used_bytes}::double precision) as disk_used_max_bytes,
    percentile_cont(0.50) within group (order by {disk_used_bytes}::double precision) as disk_used_p50_bytes,
    percentile_cont(0.95) within group (order by {disk_used_bytes}::double precision) as disk_used_p95_bytes,
    percentile_cont(0.99) within group (order by {disk_used_bytes}::double precision) as disk_used_p99_bytes,
    avg({disk_percent}) as disk_avg_percent,
    max({disk_percent}) as disk_max_percent,
    sum({network_rx_bytes})::double precision
        / nullif(sum(case when {network_rx_bytes} is not null then {interval_seconds} end), 0) as network_rx_avg_bytes_per_sec,
    min({network_rx_bytes} / {interval_seconds}) as network_rx_min_bytes_per_sec,
    max({network_rx_bytes} / {interval_seconds}) as network_rx_max_bytes_per_sec,
    percentile_cont(0.50) within group (order by {network_rx_bytes} / {interval_seconds}) as network_rx_p50_bytes_per_sec,
    percentile_cont(0.95) within group (order by {network_rx_bytes} / {interval_seconds}) as network_rx_p95_bytes_per_sec,
    percentile_cont(0.99) within group (order by {network_rx_bytes} / {interval_seconds}) as network_rx_p99_bytes_per_sec,
    sum({network_tx_bytes})::double precision
        / nullif(sum(case when {network_tx_bytes} is not null then {interval_seconds} end), 0) as network_tx_avg_bytes_per_sec,
    min({network_tx_bytes} / {interval_seconds}) as network_tx_min_bytes_per_sec,
    max({network_tx_bytes} / {interval_seconds}) as network_tx_max_bytes_per_sec,
    percentile_cont(0.50) within group (order by {network_tx_bytes} / {interval_seconds}) as network_tx_p50_bytes_per_sec,
    percentile_cont(0.95) within group (order by {network_tx_bytes} / {interval_seconds}) as network_tx_p95_bytes_per_sec,
    percentile_cont(0.99) within group (order by {network_tx_bytes} / {interval_seconds}) as network_tx_p99_bytes_per_sec,
    sum({interval_seconds}) as sampled_seconds,
    sum({disk_read_bytes})::double precision
        / nullif(sum(case when {disk_read_bytes} is not null then {interval_seconds} end), 0) as disk_read_avg_bytes_per_sec,
    max({disk_read_bytes} / {interval_seconds}) as disk_read_max_bytes_per_sec,
    sum({disk_write_bytes})::double precision
        / nullif(sum(case when {disk_write_bytes} is not null then {interval_seconds} end), 0) as disk_write_avg_bytes_per_sec,
    max({disk_write_bytes} / {interval_seconds}) as disk_write_max_bytes_per_sec
from {source}
group by 1, 2
with no data;
alter materialized view {view} set (
    timescaledb.compress = true,
    timescaledb.compress_segmentby = 'server_id',
    timescaledb.compress_orderby = 'bucket desc'
);
