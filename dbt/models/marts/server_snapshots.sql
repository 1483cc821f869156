{#- A server's state at each sample time, as the tenant data model's
    snapshots had it: cpu, memory, disk and load from the wide metrics, the
    connection count from the narrow samples (metric connection_count at the
    same instant), and a status derived from thresholds set in one place,
    dbt_project.yml:
      down      the server's latest sample, and the server is stale in
                server_current (the server stopped reporting)
      degraded  cpu >= snapshot_degraded_cpu_percent, memory >=
                snapshot_degraded_memory_percent or disk >=
                snapshot_degraded_disk_percent
      ok        otherwise
    Filter on server_id and collected_at: both reach the raw hypertable. -#}

with

{{ import_ctes(
    servers='stg_servers',
    server_metrics='stg_server_metrics',
    metric_samples='stg_metric_samples',
    server_states='server_current',
) }},

connection_counts as (
    select
        server_id,
        collected_at,
        metric_value as connection_count
    from metric_samples
    where metric_name = 'connection_count'
),

joined as (
    select
        servers.organization_id,
        server_metrics.server_id,
        server_metrics.collected_at,
        server_metrics.cpu_percent::double precision as cpu_percent,
        server_metrics.memory_percent::double precision as memory_percent,
        server_metrics.memory_used_bytes::bigint as memory_used_bytes,
        server_metrics.disk_percent::double precision as disk_percent,
        server_metrics.load_1m::double precision as load_1m,
        connection_counts.connection_count::double precision as connection_count,
        server_metrics.collected_at = server_states.last_metrics_at as is_latest,
        server_states.is_stale
    from server_metrics
    inner join servers
        on servers.server_id = server_metrics.server_id
    left join connection_counts
        on connection_counts.server_id = server_metrics.server_id
        and connection_counts.collected_at = server_metrics.collected_at
    left join server_states
        on server_states.server_id = server_metrics.server_id
),

with_status as (
    select
        organization_id,
        server_id,
        collected_at,
        cpu_percent,
        memory_percent,
        memory_used_bytes,
        disk_percent,
        load_1m,
        connection_count,
        case
            when is_latest and is_stale then 'down'
            when cpu_percent >= {{ var('snapshot_degraded_cpu_percent') }}
                or memory_percent >= {{ var('snapshot_degraded_memory_percent') }}
                or disk_percent >= {{ var('snapshot_degraded_disk_percent') }}
                then 'degraded'
            else 'ok'
        end as snapshot_status
    from joined
)

select * from with_status
