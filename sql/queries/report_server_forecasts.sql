-- report_server_forecasts: servers whose newest forecast crosses (or is already
-- over) its capacity threshold, soonest first, :top rows, with how far each
-- forecast can be trusted: backtest MASE of its model and of seasonal-naive,
-- low confidence (no model beat seasonal-naive), the 95 % band's measured coverage.
-- psql: psql -v top=10 -f sql/queries/report_server_forecasts.sql
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
    latest_forecasts.seasonal_naive_mase,
    latest_forecasts.is_low_confidence,
    latest_forecasts.interval_coverage,
    latest_forecasts.interval_method,
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
