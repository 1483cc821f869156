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
            ('servers', 'count', usage.max_servers::numeric(20, 0), usage.count_servers::numeric(20, 0)),
            ('applications', 'count', usage.max_applications::numeric(20, 0), usage.count_applications::numeric(20, 0)),
            ('databases', 'count', usage.max_databases::numeric(20, 0), usage.count_databases::numeric(20, 0)),
            ('deployments_per_month', 'count', usage.max_deployments_per_month::numeric(20, 0), usage.count_deployments_this_period::numeric(20, 0)),
            ('cpu_cores', 'cores', usage.max_cpu_cores::numeric(20, 0), usage.cpu_cores_total::numeric(20, 0)),
            ('memory', 'bytes', usage.max_memory_bytes::numeric(20, 0), usage.memory_total_bytes::numeric(20, 0)),
            ('disk', 'bytes', usage.max_disk_bytes::numeric(20, 0), usage.disk_total_bytes::numeric(20, 0))
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
        (limit_value - used_value)::numeric(20, 0) as remaining_value,
        round(100 * used_value / nullif(limit_value, 0), 2)::numeric(24, 2) as percent_used,
        limit_value is null as is_unlimited,
        coalesce(used_value = limit_value, false) as is_at_limit,
        coalesce(used_value > limit_value, false) as is_exceeded
    from quotas
)

select * from quota_status
