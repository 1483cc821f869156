-- server_window: one server's last :'window' (e.g. '24 hours', '7 days', '30 days'),
-- from the tier of metrics.server_metrics that tenant.server_buckets picks for a
-- window that long (the catalog's window -> tier mapping, which the Grafana
-- dashboard uses too; see docs/architecture.md). Real-time: the newest minutes
-- are included.
-- psql: psql -v server_id=1 -v window='7 days' -f sql/queries/server_window.sql
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
from tenant.server_buckets(now() - :'window'::interval, now(), array[:server_id]::bigint[])
order by bucket;
