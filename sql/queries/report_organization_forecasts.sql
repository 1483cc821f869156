-- report_organization_forecasts: the newest forecast of each organization
-- quota (analytics.forecasts), soonest limit crossing first, :top rows.
-- psql: psql -v top=10 -f sql/queries/report_organization_forecasts.sql
with

latest_forecasts as (
    select distinct on (forecasts.entity_id, forecasts.metric)
        forecasts.*
    from analytics.forecasts as forecasts
    where forecasts.entity_type = 'organization'
    order by forecasts.entity_id, forecasts.metric, forecasts.horizon_start desc
)

select
    organizations.name as organization,
    latest_forecasts.metric,
    latest_forecasts.model,
    latest_forecasts.threshold,
    latest_forecasts.threshold_crossing_at,
    latest_forecasts.crossing_lo_at,
    latest_forecasts.crossing_hi_at,
    latest_forecasts.slope_per_day,
    latest_forecasts.trend,
    latest_forecasts.status,
    latest_forecasts.is_above_threshold
from latest_forecasts
inner join tenancy.organizations as organizations
    on organizations.id = latest_forecasts.entity_id
order by latest_forecasts.threshold_crossing_at nulls last, organizations.name, latest_forecasts.metric
limit :top;
