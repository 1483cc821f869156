-- report_org_forecasts: the newest forecast of each organization's used disk
-- and memory (analytics.forecasts) against its licence limit, soonest crossing
-- first, :top rows, with the licence quota of the same resource as
-- marts.org_quota_status counts it (ALLOCATED: the servers' sizes), so a
-- used-bytes forecast is never shown "ok" beside an allocation already over
-- the limit without saying so. Forecast quality as in report_server_forecasts.
-- psql: psql -v top=10 -f sql/queries/report_org_forecasts.sql
with

latest_forecasts as (
    select distinct on (forecasts.entity_id, forecasts.metric)
        forecasts.*
    from analytics.forecasts as forecasts
    where forecasts.entity_type = 'organization'
    order by forecasts.entity_id, forecasts.metric, forecasts.horizon_start desc
),

allocated as (
    select
        quota_status.organization_id,
        quota_status.quota_name,
        quota_status.used_value,
        quota_status.percent_used,
        quota_status.is_exceeded
    from marts.org_quota_status as quota_status
    where quota_status.quota_name in ('disk', 'memory')
)

select
    organizations.name as organization,
    latest_forecasts.metric,
    latest_forecasts.model,
    latest_forecasts.status,
    latest_forecasts.threshold,
    latest_forecasts.threshold_crossing_at,
    latest_forecasts.crossing_lo_at,
    latest_forecasts.crossing_hi_at,
    latest_forecasts.slope_per_day,
    latest_forecasts.trend,
    latest_forecasts.is_above_threshold,
    latest_forecasts.forecast -> 0 ->> 'yhat' as first_forecast_value,
    latest_forecasts.mase,
    latest_forecasts.seasonal_naive_mase,
    latest_forecasts.is_low_confidence,
    latest_forecasts.interval_coverage,
    allocated.quota_name,
    allocated.used_value as allocated_value,
    allocated.percent_used as allocated_percent_of_limit,
    coalesce(allocated.is_exceeded, false) as is_limit_exceeded_by_allocation
from latest_forecasts
inner join tenancy.organizations as organizations
    on organizations.id = latest_forecasts.entity_id
left join allocated
    on allocated.organization_id = latest_forecasts.entity_id
    and allocated.quota_name = replace(latest_forecasts.metric, '_used_bytes', '')
order by
    latest_forecasts.is_above_threshold desc,
    coalesce(allocated.is_exceeded, false) desc,
    latest_forecasts.threshold_crossing_at nulls last,
    organizations.name,
    latest_forecasts.metric
limit :top;
