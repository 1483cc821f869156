with

{{ import_ctes(servers='stg_servers', daily_metrics='stg_server_metrics_1d') }},

joined as (
    select
        daily_metrics.metrics_date,
        daily_metrics.server_id,
        servers.server_name,
        servers.organization_id,
        daily_metrics.sample_count::bigint as sample_count,
        daily_metrics.cpu_avg_percent::double precision as cpu_avg_percent,
        daily_metrics.cpu_p95_percent::double precision as cpu_p95_percent,
        daily_metrics.cpu_max_percent::double precision as cpu_max_percent,
        daily_metrics.memory_used_avg_bytes::double precision as memory_used_avg_bytes,
        daily_metrics.memory_used_p95_bytes::double precision as memory_used_p95_bytes,
        daily_metrics.memory_avg_percent::double precision as memory_avg_percent,
        daily_metrics.disk_used_avg_bytes::double precision as disk_used_avg_bytes,
        daily_metrics.disk_used_max_bytes::double precision as disk_used_max_bytes,
        daily_metrics.disk_avg_percent::double precision as disk_avg_percent,
        daily_metrics.network_rx_avg_bytes_per_sec::double precision as network_rx_avg_bytes_per_sec,
        daily_metrics.network_tx_avg_bytes_per_sec::double precision as network_tx_avg_bytes_per_sec
    from daily_metrics
    inner join servers
        on servers.server_id = daily_metrics.server_id
),

-- how each server compares with its organization's other servers that day
compared as (
    select
        *,
        cpu_avg_percent
            - avg(cpu_avg_percent) over (partition by organization_id, metrics_date)
            as cpu_avg_vs_organization_percent_points,
        rank() over (partition by organization_id, metrics_date order by cpu_p95_percent desc)
            as cpu_p95_rank_in_organization
    from joined
)

select * from compared
