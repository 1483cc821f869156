-- server_last_24h: one server's last 24 hours in 1-minute buckets (1,440 points), from the tier
-- metrics.server_buckets picks for a 24 hours window (the catalog's window -> tier
-- mapping, the same the Grafana dashboard uses; real-time, so the newest minutes are included).
-- psql: psql -v server_id=1 -f sql/queries/server_last_24h.sql
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
from metrics.server_buckets(now() - interval '24 hours', now(), array[:server_id]::bigint[])
order by bucket;
