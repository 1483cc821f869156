with recursive

{{ import_ctes(organizations='stg_organizations', usage='org_resource_usage') }},

{{ org_subtree_pairs() }},

subtree_totals as (
    select
        subtree_pairs.ancestor_id as organization_id,
        count(*) - 1 as count_descendant_organizations,
        sum(usage.count_servers) as total_count_servers,
        sum(usage.count_applications) as total_count_applications,
        sum(usage.count_databases) as total_count_databases,
        sum(usage.count_deployments_this_period) as total_count_deployments_this_period,
        sum(usage.cpu_cores_total) as total_cpu_cores,
        sum(usage.memory_total_bytes) as total_memory_total_bytes,
        sum(usage.memory_used_bytes) as total_memory_used_bytes,
        sum(usage.disk_total_bytes) as total_disk_total_bytes,
        sum(usage.disk_used_bytes) as total_disk_used_bytes
    from subtree_pairs
    inner join usage
        on usage.organization_id = subtree_pairs.descendant_id
    group by 1
),

-- depth = number of strict ancestors (0 for a top-level organization)
depths as (
    select
        descendant_id as organization_id,
        count(*) - 1 as organization_depth
    from subtree_pairs
    group by 1
),

final as (
    select
        usage.organization_id,
        usage.organization_name,
        usage.parent_organization_id,
        depths.organization_depth::integer as organization_depth,
        subtree_totals.count_descendant_organizations::bigint as count_descendant_organizations,
        usage.count_servers as own_count_servers,
        usage.count_applications as own_count_applications,
        usage.count_databases as own_count_databases,
        usage.cpu_cores_total as own_cpu_cores,
        usage.memory_total_bytes as own_memory_total_bytes,
        usage.memory_used_bytes as own_memory_used_bytes,
        usage.disk_total_bytes as own_disk_total_bytes,
        usage.disk_used_bytes as own_disk_used_bytes,
        subtree_totals.total_count_servers::bigint as total_count_servers,
        subtree_totals.total_count_applications::bigint as total_count_applications,
        subtree_totals.total_count_databases::bigint as total_count_databases,
        subtree_totals.total_cpu_cores::bigint as total_cpu_cores,
        subtree_totals.total_memory_total_bytes::bigint as total_memory_total_bytes,
        subtree_totals.total_memory_used_bytes::bigint as total_memory_used_bytes,
        subtree_totals.total_disk_total_bytes::bigint as total_disk_total_bytes,
        subtree_totals.total_disk_used_bytes::bigint as total_disk_used_bytes,
        subtree_totals.total_count_deployments_this_period::bigint as total_count_deployments_this_period
    from usage
    inner join subtree_totals
        on subtree_totals.organization_id = usage.organization_id
    inner join depths
        on depths.organization_id = usage.organization_id
)

select * from final
