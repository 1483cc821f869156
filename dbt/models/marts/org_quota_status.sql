with

usage as (
    select * from {{ ref('org_resource_usage') }}
),

-- one row per organization and quota; capacity quotas (cpu, memory, disk)
-- limit what is provisioned, so they compare with the servers' totals
quotas as (
    select
        usage.organization_id,
        quota.quota_name,
        quota.unit,
        quota.limit_value,
        quota.used_value
    from usage
    cross join lateral (
        values
            ('servers', 'count', usage.max_servers::numeric, usage.count_servers::numeric),
            ('applications', 'count', usage.max_applications::numeric, usage.count_applications::numeric),
            ('databases', 'count', usage.max_databases::numeric, usage.count_databases::numeric),
            ('deployments_per_month', 'count', usage.max_deployments_per_month::numeric, usage.count_deployments_this_period::numeric),
            ('cpu_cores', 'cores', usage.max_cpu_cores::numeric, usage.cpu_cores_total::numeric),
            ('memory', 'bytes', usage.max_memory_bytes::numeric, usage.memory_total_bytes::numeric),
            ('disk', 'bytes', usage.max_disk_bytes::numeric, usage.disk_total_bytes::numeric)
    ) as quota (quota_name, unit, limit_value, used_value)
),

-- a null limit is unlimited: remaining and percent stay null, never exceeded
quota_status as (
    select
        organization_id,
        quota_name,
        unit,
        limit_value,
        used_value,
        limit_value - used_value as remaining_value,
        round(100 * used_value / nullif(limit_value, 0), 2) as percent_used,
        limit_value is null as is_unlimited,
        coalesce(used_value = limit_value, false) as is_at_limit,
        coalesce(used_value > limit_value, false) as is_exceeded
    from quotas
)

select * from quota_status
