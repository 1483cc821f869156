with

source as (
    select * from {{ source('metrics', 'server_last_point') }}
),

renamed as (
    select
        server_id,
        last_metrics_at,
        cpu_percent,
        memory_percent,
        memory_used_bytes,
        disk_percent,
        disk_used_bytes,
        load_1m,
        interval_seconds
    from source
)

select * from renamed
