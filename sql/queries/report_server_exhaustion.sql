-- report_server_exhaustion: servers whose newest forecast crosses its
-- capacity threshold (analytics.forecasts), soonest first, :top rows.
-- psql: psql -v top=10 -f sql/queries/report_server_exhaustion.sql
with

latest_forecasts as (
    select distinct on (forecasts.entity_id, forecasts.metric)
        forecasts.*
    from analytics.forecasts as forecasts
    where forecasts.entity_type = 'server'
    order by forecasts.entity_id, forecasts.metric, forecasts.horizon_start desc
)

select
    servers.id as server_id,
    servers.name as server,
    organizations.name as organization,
    latest_forecasts.metric,
    latest_forecasts.model,
    latest_forecasts.threshold,
    latest_forecasts.threshold_crossing_at,
    latest_forecasts.crossing_lo_at,
    latest_forecasts.crossing_hi_at,
    latest_forecasts.trend,
    latest_forecasts.slope_per_day,
    latest_forecasts.mase,
    latest_forecasts.forecast,
    latest_forecasts.is_above_threshold
from latest_forecasts
inner join tenancy.servers as servers
    on servers.id = latest_forecasts.entity_id
inner join tenancy.organizations as organizations
    on organizations.id = servers.organization_id
where latest_forecasts.threshold_crossing_at is not null
order by latest_forecasts.threshold_crossing_at, servers.name, latest_forecasts.metric
limit :top;
