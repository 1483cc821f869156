with

source as (
    select * from {{ source('metrics', 'site_usage_daily') }}
),

renamed as (
    select
        bucket as day_start_at,
        (bucket at time zone 'UTC')::date as usage_date,
        site_id,
        memory_avg_mb,
        memory_max_mb,
        cpu_avg_percent,
        cpu_max_percent,
        bandwidth_total_mb,
        requests_total,
        response_time_avg_ms,
        uptime_percent,
        sample_count,
        sampled_seconds
    from source
)

select * from renamed
