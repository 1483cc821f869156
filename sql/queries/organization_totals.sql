-- organization_totals: per organization, its own servers and those of all its
-- sub-organizations (any depth): capacity, current use (each server's last
-- sample, metrics.server_last_point) and the CPU average of the last 24 hours
-- (the mean of the cpu_percent samples in the hourly buckets that start in the
-- last 24 hours, from metrics.organization_cpu_hourly: 24 rows per
-- organization instead of 24 per server, kept by triggers on the raw table).
-- At 10,000 servers it reads 10,000 last points and a few hundred hourly rows.
-- The tree walk stops 64 levels down (the limit the anti-cycle trigger
-- enforces on tenancy.organizations), so it ends even on corrupt data.
-- psql: psql -f sql/queries/organization_totals.sql
with recursive org_tree as (
    select
        organizations.id as root_id,
        organizations.id as organization_id,
        1 as depth
    from tenancy.organizations as organizations
    union all
    select
        org_tree.root_id,
        children.id,
        org_tree.depth + 1
    from org_tree
    join tenancy.organizations as children on children.parent_id = org_tree.organization_id
    where org_tree.depth < 64
),

org_servers as (
    select
        org_tree.root_id,
        servers.id as server_id,
        servers.cpu_cores,
        servers.memory_total_bytes,
        servers.disk_total_bytes
    from org_tree
    join tenancy.servers as servers on servers.organization_id = org_tree.organization_id
),

cpu_last_24h as (
    select
        org_tree.root_id,
        sum(organization_cpu_hourly.cpu_percent_sum) as cpu_percent_sum,
        sum(organization_cpu_hourly.cpu_sample_count) as cpu_sample_count
    from org_tree
    join metrics.organization_cpu_hourly as organization_cpu_hourly
        on organization_cpu_hourly.organization_id = org_tree.organization_id
    where organization_cpu_hourly.hour >= now() - interval '24 hours'
    group by 1
),

totals as (
    select
        org_servers.root_id as organization_id,
        count(org_servers.server_id) as count_servers,
        sum(org_servers.cpu_cores) as cpu_cores_total,
        sum(org_servers.memory_total_bytes) as memory_total_bytes,
        sum(org_servers.disk_total_bytes) as disk_total_bytes,
        sum(server_last_point.memory_used_bytes) as memory_used_bytes,
        sum(server_last_point.disk_used_bytes) as disk_used_bytes,
        max(server_last_point.last_metrics_at) as last_metrics_at
    from org_servers
    left join metrics.server_last_point as server_last_point on server_last_point.server_id = org_servers.server_id
    group by 1
)

select
    organizations.id as organization_id,
    organizations.name as organization_name,
    coalesce(totals.count_servers, 0) as count_servers,
    totals.cpu_cores_total,
    totals.memory_total_bytes,
    totals.disk_total_bytes,
    totals.memory_used_bytes,
    totals.disk_used_bytes,
    (cpu_last_24h.cpu_percent_sum / nullif(cpu_last_24h.cpu_sample_count, 0))::double precision
        as cpu_avg_percent_24h,
    totals.last_metrics_at
from tenancy.organizations as organizations
left join totals on totals.organization_id = organizations.id
left join cpu_last_24h on cpu_last_24h.root_id = organizations.id
order by organizations.id;
