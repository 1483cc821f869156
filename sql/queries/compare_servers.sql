-- compare_servers: several servers side by side over a recent window, from the
-- hourly aggregate. Means are sample-weighted (equal to the raw mean), byte
-- rates weighted by the seconds the samples cover (sampled_seconds: equal to
-- the window's bytes over its seconds, true at any sampling interval); peaks
-- are the largest hourly value. A percentile over the whole window cannot be
-- built from hourly percentiles, so the column says what it is: the highest
-- hourly p95.
-- psql: psql -v server_ids='{1,2,3}' -v since='7 days' -f sql/queries/compare_servers.sql
select
    servers.id as server_id,
    servers.name as server_name,
    sum(server_metrics_1h.sample_count) as sample_count,
    sum(server_metrics_1h.cpu_avg_percent * server_metrics_1h.sample_count)
        / sum(server_metrics_1h.sample_count) as cpu_avg_percent,
    max(server_metrics_1h.cpu_max_percent) as cpu_max_percent,
    max(server_metrics_1h.cpu_p95_percent) as cpu_p95_percent_peak_hour,
    max(server_metrics_1h.memory_used_max_bytes) as memory_used_max_bytes,
    max(server_metrics_1h.disk_used_max_bytes) as disk_used_max_bytes,
    sum(server_metrics_1h.network_rx_avg_bytes_per_sec * server_metrics_1h.sampled_seconds)
        / sum(server_metrics_1h.sampled_seconds) as network_rx_avg_bytes_per_sec,
    sum(server_metrics_1h.network_tx_avg_bytes_per_sec * server_metrics_1h.sampled_seconds)
        / sum(server_metrics_1h.sampled_seconds) as network_tx_avg_bytes_per_sec
from tenancy.servers as servers
join metrics.server_metrics_1h as server_metrics_1h on server_metrics_1h.server_id = servers.id
where servers.id = any(:'server_ids'::bigint[])
  and server_metrics_1h.bucket >= now() - :'since'::interval
group by servers.id, servers.name
order by servers.id;
