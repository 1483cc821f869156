with

{{ import_ctes(
    organizations='stg_organizations',
    servers='stg_servers',
    server_last_points='stg_server_last_point',
    applications='stg_applications',
    databases='stg_databases',
    deployments='stg_deployments',
    licences='stg_licences',
) }},

-- decommissioned servers no longer count against capacity or quotas
servers_in_service as (
    select
        servers.server_id,
        servers.organization_id,
        servers.cpu_cores,
        servers.memory_total_bytes,
        servers.disk_total_bytes,
        server_last_points.memory_used_bytes,
        server_last_points.disk_used_bytes
    from servers
    left join server_last_points
        on server_last_points.server_id = servers.server_id
    where servers.server_status <> 'decommissioned'
),

server_totals as (
    select
        organization_id,
        count(*) as count_servers,
        sum(cpu_cores) as cpu_cores_total,
        sum(memory_total_bytes) as memory_total_bytes,
        sum(memory_used_bytes) as memory_used_bytes,
        sum(disk_total_bytes) as disk_total_bytes,
        sum(disk_used_bytes) as disk_used_bytes
    from servers_in_service
    group by 1
),

application_counts as (
    select
        organization_id,
        count(*) as count_applications
    from applications
    group by 1
),

database_counts as (
    select
        organization_id,
        count(*) as count_databases
    from databases
    group by 1
),

-- the licence's billing period, else the calendar month (UTC) of as_of
billing_periods as (
    select
        organizations.organization_id,
        licences.organization_id is not null as has_licence,
        coalesce(
            licences.billing_period_start,
            date_trunc('month', {{ as_of() }} at time zone 'UTC')::date
        ) as billing_period_start,
        coalesce(
            licences.billing_period_end,
            (date_trunc('month', {{ as_of() }} at time zone 'UTC') + interval '1 month - 1 day')::date
        ) as billing_period_end
    from organizations
    left join licences
        on licences.organization_id = organizations.organization_id
),

-- a deployment uses the monthly quota when it is requested (created_at),
-- whatever its outcome; billing_period_end is inclusive
deployment_counts as (
    select
        billing_periods.organization_id,
        count(deployments.deployment_id) as count_deployments_this_period
    from billing_periods
    inner join deployments
        on deployments.organization_id = billing_periods.organization_id
        and (deployments.created_at at time zone 'UTC')::date
            between billing_periods.billing_period_start and billing_periods.billing_period_end
    group by 1
),

final as (
    select
        organizations.organization_id,
        organizations.organization_name,
        organizations.parent_organization_id,
        coalesce(server_totals.count_servers, 0)::bigint as count_servers,
        coalesce(application_counts.count_applications, 0)::bigint as count_applications,
        coalesce(database_counts.count_databases, 0)::bigint as count_databases,
        coalesce(deployment_counts.count_deployments_this_period, 0)::bigint as count_deployments_this_period,
        coalesce(server_totals.cpu_cores_total, 0)::bigint as cpu_cores_total,
        coalesce(server_totals.memory_total_bytes, 0)::bigint as memory_total_bytes,
        coalesce(server_totals.memory_used_bytes, 0)::bigint as memory_used_bytes,
        coalesce(server_totals.disk_total_bytes, 0)::bigint as disk_total_bytes,
        coalesce(server_totals.disk_used_bytes, 0)::bigint as disk_used_bytes,
        billing_periods.has_licence,
        licences.max_servers::bigint as max_servers,
        licences.max_applications::bigint as max_applications,
        licences.max_databases::bigint as max_databases,
        licences.max_deployments_per_month::bigint as max_deployments_per_month,
        licences.max_cpu_cores::bigint as max_cpu_cores,
        licences.max_memory_bytes::bigint as max_memory_bytes,
        licences.max_disk_bytes::bigint as max_disk_bytes,
        billing_periods.billing_period_start,
        billing_periods.billing_period_end,
        {{ as_of() }} as last_calculated_at
    from organizations
    left join server_totals
        on server_totals.organization_id = organizations.organization_id
    left join application_counts
        on application_counts.organization_id = organizations.organization_id
    left join database_counts
        on database_counts.organization_id = organizations.organization_id
    left join deployment_counts
        on deployment_counts.organization_id = organizations.organization_id
    left join billing_periods
        on billing_periods.organization_id = organizations.organization_id
    left join licences
        on licences.organization_id = organizations.organization_id
)

select * from final
