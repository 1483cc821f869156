with

source as (
    select * from {{ source('metrics', 'site_usage') }}
),

renamed as (
    select
        site_id,
        collected_at,
        memory_used_mb,
        cpu_percent,
        disk_used_mb,
        bandwidth_mb,
        requests,
        active_requests,
        response_time_ms,
        is_up,
        interval_seconds
    from source
)

select * from renamed
