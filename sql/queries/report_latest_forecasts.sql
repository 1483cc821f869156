-- report_latest_forecasts: the newest forecast of each entity of type
-- :'entity_type' (server | organization) in analytics.forecasts, with its
-- server and organization names, soonest threshold crossing first, :top rows;
-- :only_crossing (true | false) keeps only forecasts that cross their threshold.
-- psql: psql -v entity_type=server -v only_crossing=true -v top=10 -f sql/queries/report_latest_forecasts.sql
with

latest_forecasts as (
    select distinct on (forecasts.entity_id, forecasts.metric)
        forecasts.*
    from analytics.forecasts as forecasts
    where forecasts.entity_type = :'entity_type'
    order by forecasts.entity_id, forecasts.metric, forecasts.horizon_start desc
),

named as (
    select
        servers.id as server_id,
        servers.name as server,
        organizations.name as organization,
        latest_forecasts.*
    from latest_forecasts
    left join tenancy.servers as servers
        on latest_forecasts.entity_type = 'server'
        and servers.id = latest_forecasts.entity_id
    inner join tenancy.organizations as organizations
        on organizations.id = case
            when latest_forecasts.entity_type = 'server' then servers.organization_id
            else latest_forecasts.entity_id
        end
)

select
    server_id,
    server,
    organization,
    metric,
    model,
    threshold,
    threshold_crossing_at,
    crossing_lo_at,
    crossing_hi_at,
    trend,
    slope_per_day,
    mase,
    status,
    forecast,
    is_above_threshold
from named
where not :only_crossing or threshold_crossing_at is not null
order by threshold_crossing_at nulls last, coalesce(server, organization), metric
limit :top;
