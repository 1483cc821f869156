{%- set stale_after_seconds = collection_interval_seconds() * var('stale_after_intervals') -%}

with

servers as (
    select * from {{ ref('stg_servers') }}
),

server_last_points as (
    select * from {{ ref('stg_server_last_point') }}
),

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
            as seconds_since_last_metrics
    from servers
    left join server_last_points
        on server_last_points.server_id = servers.server_id
),

-- stale: no sample for more than {{ var('stale_after_intervals') }} collection
-- intervals ({{ stale_after_seconds }} s), or never reported
flagged as (
    select
        *,
        coalesce(seconds_since_last_metrics > {{ stale_after_seconds }}, true) as is_stale
    from joined
)

select * from flagged
