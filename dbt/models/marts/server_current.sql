{#- Stale after stale_after_intervals of the server's own sampling interval (its
    latest sample's interval_seconds: a server sampled every 60 s is not stale 61 s
    after its last sample); a server that never reported is stale. -#}

with

{{ import_ctes(servers='stg_servers', server_last_points='stg_server_last_point') }},

joined as (
    select
        servers.server_id,
        servers.organization_id,
        servers.server_name,
        servers.hostname,
        servers.server_status,
        server_last_points.last_metrics_at,
        server_last_points.cpu_percent::double precision as cpu_percent,
        server_last_points.memory_percent::double precision as memory_percent,
        server_last_points.memory_used_bytes::bigint as memory_used_bytes,
        server_last_points.disk_percent::double precision as disk_percent,
        server_last_points.disk_used_bytes::bigint as disk_used_bytes,
        server_last_points.load_1m::double precision as load_1m,
        extract(epoch from {{ as_of() }} - server_last_points.last_metrics_at)::double precision
            as seconds_since_last_metrics,
        server_last_points.interval_seconds * {{ var('stale_after_intervals') }} as stale_after_seconds
    from servers
    left join server_last_points
        on server_last_points.server_id = servers.server_id
),

-- stale: no sample for more than {{ var('stale_after_intervals') }} of the server's
-- sampling intervals, or never reported
flagged as (
    select
        *,
        coalesce(seconds_since_last_metrics > stale_after_seconds, true) as is_stale
    from joined
),

final as (
    select
        server_id,
        organization_id,
        server_name,
        hostname,
        server_status,
        last_metrics_at,
        cpu_percent,
        memory_percent,
        memory_used_bytes,
        disk_percent,
        disk_used_bytes,
        load_1m,
        seconds_since_last_metrics,
        is_stale
    from flagged
)

select * from final
