-- Every organization's subtree total equals its own figure plus the subtree
-- totals of its direct children: checks the recursive rollup one level at a
-- time, independently of how it walked the tree. Returns violations.
with

rollup as (
    select * from {{ ref('org_usage_rollup') }}
),

children_totals as (
    select
        parent_organization_id as organization_id,
        count(*) + sum(count_descendant_organizations) as count_descendant_organizations,
        sum(total_count_servers) as total_count_servers,
        sum(total_count_applications) as total_count_applications,
        sum(total_count_databases) as total_count_databases,
        sum(total_cpu_cores) as total_cpu_cores,
        sum(total_memory_total_bytes) as total_memory_total_bytes,
        sum(total_memory_used_bytes) as total_memory_used_bytes,
        sum(total_disk_total_bytes) as total_disk_total_bytes,
        sum(total_disk_used_bytes) as total_disk_used_bytes
    from rollup
    where parent_organization_id is not null
    group by 1
),

compared as (
    select
        rollup.organization_id,
        rollup.count_descendant_organizations
            = coalesce(children_totals.count_descendant_organizations, 0) as descendants_match,
        rollup.total_count_servers
            = rollup.own_count_servers + coalesce(children_totals.total_count_servers, 0) as servers_match,
        rollup.total_count_applications
            = rollup.own_count_applications + coalesce(children_totals.total_count_applications, 0)
            as applications_match,
        rollup.total_count_databases
            = rollup.own_count_databases + coalesce(children_totals.total_count_databases, 0)
            as databases_match,
        rollup.total_cpu_cores
            = rollup.own_cpu_cores + coalesce(children_totals.total_cpu_cores, 0) as cpu_cores_match,
        rollup.total_memory_total_bytes
            = rollup.own_memory_total_bytes + coalesce(children_totals.total_memory_total_bytes, 0)
            as memory_total_match,
        rollup.total_memory_used_bytes
            = rollup.own_memory_used_bytes + coalesce(children_totals.total_memory_used_bytes, 0)
            as memory_used_match,
        rollup.total_disk_total_bytes
            = rollup.own_disk_total_bytes + coalesce(children_totals.total_disk_total_bytes, 0)
            as disk_total_match,
        rollup.total_disk_used_bytes
            = rollup.own_disk_used_bytes + coalesce(children_totals.total_disk_used_bytes, 0)
            as disk_used_match
    from rollup
    left join children_totals
        on children_totals.organization_id = rollup.organization_id
)

select *
from compared
where not (
    descendants_match
    and servers_match
    and applications_match
    and databases_match
    and cpu_cores_match
    and memory_total_match
    and memory_used_match
    and disk_total_match
    and disk_used_match
)
