{#- Limits are per site (tenancy.sites, null = no limit). max_bandwidth_mb is
    a daily allowance; requests per minute is the day's average rate over the
    seconds its samples cover (sampled_seconds: each sample's interval_seconds,
    so true at any sampling interval); the daily aggregate keeps no per-minute peak. -#}

with

{{ import_ctes(sites='stg_sites', daily_usage='stg_site_usage_daily') }},

joined as (
    select
        daily_usage.usage_date,
        daily_usage.site_id,
        sites.site_name,
        sites.organization_id,
        sites.user_id,
        sites.server_id,
        daily_usage.sample_count::bigint as sample_count,
        daily_usage.memory_avg_mb::double precision as memory_avg_mb,
        daily_usage.memory_max_mb::double precision as memory_max_mb,
        sites.max_memory_mb::double precision as max_memory_mb,
        daily_usage.cpu_avg_percent::double precision as cpu_avg_percent,
        daily_usage.cpu_max_percent::double precision as cpu_max_percent,
        sites.max_cpu_percent::double precision as max_cpu_percent,
        daily_usage.bandwidth_total_mb::double precision as bandwidth_total_mb,
        sites.max_bandwidth_mb::double precision as max_bandwidth_mb,
        daily_usage.requests_total::bigint as requests_total,
        (
            daily_usage.requests_total
            / nullif(daily_usage.sampled_seconds / 60.0, 0)
        )::double precision as requests_per_minute_avg,
        sites.max_requests_per_minute::double precision as max_requests_per_minute,
        daily_usage.response_time_avg_ms::double precision as response_time_avg_ms,
        daily_usage.uptime_percent::double precision as uptime_percent
    from daily_usage
    inner join sites
        on sites.site_id = daily_usage.site_id
),

-- a null limit is never breached
breaches as (
    select
        *,
        coalesce(memory_max_mb > max_memory_mb, false) as is_memory_limit_breached,
        coalesce(cpu_max_percent > max_cpu_percent, false) as is_cpu_limit_breached,
        coalesce(bandwidth_total_mb > max_bandwidth_mb, false) as is_bandwidth_limit_breached,
        coalesce(requests_per_minute_avg > max_requests_per_minute, false) as is_requests_limit_breached
    from joined
),

final as (
    select
        *,
        is_memory_limit_breached
            or is_cpu_limit_breached
            or is_bandwidth_limit_breached
            or is_requests_limit_breached as is_any_limit_breached
    from breaches
)

select * from final
