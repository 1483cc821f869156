{#-
    The latest forecast of each server metric and organization quota
    (analytics.forecasts), with names, how far it can be trusted, and for
    organizations the measure it forecasts beside the licence quota it is
    compared with. An organization's disk/memory forecast is of USED bytes
    (sum of its servers' used disk / memory); org_quota_status's disk/memory
    quota counts ALLOCATED bytes (the servers' sizes). Both are here, labelled,
    so a used-bytes forecast of "ok" next to an exceeded allocation is read
    right: is_limit_exceeded_by_allocation says the licence is already over.
-#}

with

{{ import_ctes(
    forecasts='stg_forecasts',
    servers='stg_servers',
    organizations='stg_organizations',
    quota_status='org_quota_status',
) }},

latest as (
    select distinct on (entity_type, entity_id, metric)
        *
    from forecasts
    order by entity_type, entity_id, metric, horizon_start_at desc
),

-- a server forecast belongs to its server's organization; an organization's to itself
located as (
    select
        latest.*,
        case latest.entity_type when 'server' then servers.organization_id else latest.entity_id end
            as organization_id,
        case latest.entity_type when 'server' then latest.entity_id end as server_id,
        servers.server_name
    from latest
    left join servers
        on latest.entity_type = 'server'
        and servers.server_id = latest.entity_id
),

named as (
    select
        located.*,
        organizations.organization_name,
        case located.metric
            when 'disk_used_bytes' then 'disk'
            when 'memory_used_bytes' then 'memory'
        end as quota_name
    from located
    inner join organizations
        on organizations.organization_id = located.organization_id
    -- a server forecast whose server the reader cannot see has no organization
    where located.entity_type = 'organization' or located.server_name is not null
),

with_quota as (
    select
        named.forecast_id,
        named.organization_id,
        named.organization_name,
        named.entity_type,
        named.server_id,
        named.server_name,
        named.metric,
        case named.metric
            when 'disk_used_bytes' then 'disk used (sum of servers'' used bytes)'
            when 'memory_used_bytes' then 'memory used (sum of servers'' used bytes)'
            when 'cpu_percent' then 'cpu used (percent)'
            when 'memory_percent' then 'memory used (percent)'
            when 'disk_percent' then 'disk used (percent)'
            when 'network_bytes_per_sec' then 'network rx + tx (bytes per second)'
            else named.metric
        end as measure,
        named.model,
        named.forecast_status,
        named.horizon_start_at,
        named.trend,
        named.slope_per_day,
        named.first_forecast_value,
        named.threshold,
        named.threshold_crossing_at,
        named.crossing_lo_at,
        named.crossing_hi_at,
        named.is_above_threshold,
        named.backtest_mase,
        named.seasonal_naive_backtest_mase,
        named.is_low_confidence,
        named.interval_coverage,
        named.interval_method,
        named.quota_name,
        quota_status.used_value::double precision as allocated_value,
        quota_status.percent_used::double precision as allocated_percent_of_limit,
        coalesce(quota_status.is_exceeded, false) as is_limit_exceeded_by_allocation
    from named
    left join quota_status
        on named.entity_type = 'organization'
        and quota_status.organization_id = named.organization_id
        and quota_status.quota_name = named.quota_name
)

select * from with_quota
