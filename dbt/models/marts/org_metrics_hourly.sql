{#- Organization-wide hour: cpu averaged over every sample of its servers
    (weighted by sample_count, not a mean of means) and its peak; memory,
    disk and network as the sum over servers of each server's hourly figure.
    is_complete: every server the organization runs (not decommissioned)
    reported in that hour; a partial hour's totals would look like a drop. -#}

with

servers as (
    select * from {{ ref('stg_servers') }}
),

hourly_metrics as (
    select * from {{ ref('stg_server_metrics_1h') }}
),

expected_servers as (
    select
        organization_id,
        count(*) as count_servers_expected
    from servers
    where server_status <> 'decommissioned'
    group by 1
),

organization_hours as (
    select
        servers.organization_id,
        hourly_metrics.hour_start_at,
        count(*) as count_servers_reporting,
        sum(hourly_metrics.sample_count) as sample_count,
        sum(hourly_metrics.cpu_avg_percent * hourly_metrics.sample_count)
            / nullif(sum(hourly_metrics.sample_count), 0) as cpu_avg_percent,
        max(hourly_metrics.cpu_max_percent) as cpu_max_percent,
        sum(hourly_metrics.memory_used_avg_bytes) as memory_used_avg_bytes_total,
        sum(hourly_metrics.memory_used_max_bytes) as memory_used_max_bytes_total,
        sum(hourly_metrics.disk_used_avg_bytes) as disk_used_avg_bytes_total,
        sum(hourly_metrics.disk_used_max_bytes) as disk_used_max_bytes_total,
        sum(hourly_metrics.network_rx_avg_bytes_per_sec) as network_rx_avg_bytes_per_sec_total,
        sum(hourly_metrics.network_tx_avg_bytes_per_sec) as network_tx_avg_bytes_per_sec_total
    from hourly_metrics
    inner join servers
        on servers.server_id = hourly_metrics.server_id
    group by 1, 2
),

final as (
    select
        organization_hours.organization_id,
        organization_hours.hour_start_at,
        organization_hours.count_servers_reporting::bigint as count_servers_reporting,
        coalesce(expected_servers.count_servers_expected, 0)::bigint as count_servers_expected,
        organization_hours.count_servers_reporting
            = coalesce(expected_servers.count_servers_expected, 0) as is_complete,
        organization_hours.sample_count::bigint as sample_count,
        organization_hours.cpu_avg_percent::double precision as cpu_avg_percent,
        organization_hours.cpu_max_percent::double precision as cpu_max_percent,
        organization_hours.memory_used_avg_bytes_total::double precision as memory_used_avg_bytes_total,
        organization_hours.memory_used_max_bytes_total::double precision as memory_used_max_bytes_total,
        organization_hours.disk_used_avg_bytes_total::double precision as disk_used_avg_bytes_total,
        organization_hours.disk_used_max_bytes_total::double precision as disk_used_max_bytes_total,
        organization_hours.network_rx_avg_bytes_per_sec_total::double precision
            as network_rx_avg_bytes_per_sec_total,
        organization_hours.network_tx_avg_bytes_per_sec_total::double precision
            as network_tx_avg_bytes_per_sec_total
    from organization_hours
    left join expected_servers
        on expected_servers.organization_id = organization_hours.organization_id
)

select * from final
