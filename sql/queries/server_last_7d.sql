-- server_last_7d: one server's last 7 days in 1-hour buckets (168 points),
-- from metrics.server_metrics_1h (real-time, so the newest minutes are included).
-- psql: psql -v server_id=1 -f sql/queries/server_last_7d.sql
select
    bucket,
    sample_count,
    cpu_avg_percent,
    cpu_max_percent,
    cpu_p95_percent,
    memory_used_avg_bytes,
    memory_used_max_bytes,
    disk_used_max_bytes,
    network_rx_avg_bytes_per_sec,
    network_tx_avg_bytes_per_sec
from metrics.server_metrics_1h
where server_id = :server_id
  and bucket >= now() - interval '7 days'
order by bucket;
