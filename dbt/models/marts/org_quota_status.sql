with

{{ import_ctes(usage='org_resource_usage', rollup='org_usage_rollup') }},

-- one row per organization and quota; capacity quotas (cpu, memory, disk)
-- limit what is provisioned, so they compare with the servers' totals
quotas as (
    select
        usage.organization_id,
        quota.quota_name,
        quota.unit,
        quota.limit_value,
        quota.used_value,
        quota.used_value_with_children
    from usage
    inner join rollup
        on rollup.organization_id = usage.organization_id
    cross join lateral (
        values
            ('servers', 'count', usage.max_servers::numeric(20, 0), usage.count_servers::numeric(20, 0), rollup.total_count_servers::numeric(20, 0)),
            ('applications', 'count', usage.max_applications::numeric(20, 0), usage.count_applications::numeric(20, 0), rollup.total_count_applications::numeric(20, 0)),
            ('databases', 'count', usage.max_databases::numeric(20, 0), usage.count_databases::numeric(20, 0), rollup.total_count_databases::numeric(20, 0)),
            ('deployments_per_month', 'count', usage.max_deployments_per_month::numeric(20, 0), usage.count_deployments_this_period::numeric(20, 0), rollup.total_count_deployments_this_period::numeric(20, 0)),
            ('cpu_cores', 'cores', usage.max_cpu_cores::numeric(20, 0), usage.cpu_cores_total::numeric(20, 0), rollup.total_cpu_cores::numeric(20, 0)),
            ('memory', 'bytes', usage.max_memory_bytes::numeric(20, 0), usage.memory_total_bytes::numeric(20, 0), rollup.total_memory_total_bytes::numeric(20, 0)),
            ('disk', 'bytes', usage.max_disk_bytes::numeric(20, 0), usage.disk_total_bytes::numeric(20, 0), rollup.total_disk_total_bytes::numeric(20, 0))
    ) as quota (quota_name, unit, limit_value, used_value, used_value_with_children)
),

-- a null limit is unlimited: remaining and percent stay null, never exceeded.
-- Two meanings side by side (docs/schema.md, "Quota semantics"):
--   precise:  is_exceeded = used > limit, is_at_limit = used = limit,
--             remaining_value = limit - used (negative when over);
--   panel's:  is_full = used >= limit (no room for one more), can_add = not
--             is_full, remaining_clamped = greatest(limit - used, 0).
-- A licence limits the organization that holds it: used_value counts its own
-- servers etc. (the hosting panel's rule); the *_with_children columns count
-- its sub-organizations too, for a licence read as covering the subtree.
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
        coalesce(used_value > limit_value, false) as is_exceeded,
        (case when limit_value is not null then greatest(limit_value - used_value, 0) end)::numeric(20, 0)
            as remaining_clamped,
        coalesce(used_value >= limit_value, false) as is_full,
        not coalesce(used_value >= limit_value, false) as can_add,
        used_value_with_children,
        coalesce(used_value_with_children > limit_value, false) as is_exceeded_with_children,
        coalesce(used_value_with_children >= limit_value, false) as is_full_with_children
    from quotas
)

select * from quota_status
