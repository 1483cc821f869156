-- report_org_forecasts: the newest forecast of each organization's used disk
-- and memory against its licence limit, soonest crossing first, :top rows, with
-- the licence quota of the same resource as marts.org_quota_status counts it
-- (ALLOCATED: the servers' sizes), so a used-bytes forecast is never shown "ok"
-- beside an allocation already over the limit without saying so. All of it is
-- marts.capacity_forecasts (dbt); this query picks the organizations' rows and
-- names the columns as the report reads them.
-- psql: psql -v top=10 -f sql/queries/report_org_forecasts.sql
select
    capacity_forecasts.organization_name as organization,
    capacity_forecasts.metric,
    capacity_forecasts.model,
    capacity_forecasts.forecast_status as status,
    capacity_forecasts.threshold,
    capacity_forecasts.threshold_crossing_at,
    capacity_forecasts.crossing_lo_at,
    capacity_forecasts.crossing_hi_at,
    capacity_forecasts.slope_per_day,
    capacity_forecasts.trend,
    capacity_forecasts.is_above_threshold,
    capacity_forecasts.first_forecast_value,
    capacity_forecasts.backtest_mase as mase,
    capacity_forecasts.seasonal_naive_backtest_mase as seasonal_naive_mase,
    capacity_forecasts.is_low_confidence,
    capacity_forecasts.interval_coverage,
    capacity_forecasts.quota_name,
    capacity_forecasts.allocated_value,
    capacity_forecasts.allocated_percent_of_limit,
    capacity_forecasts.is_limit_exceeded_by_allocation
from marts.capacity_forecasts as capacity_forecasts
where capacity_forecasts.entity_type = 'organization'
order by
    capacity_forecasts.is_above_threshold desc,
    capacity_forecasts.is_limit_exceeded_by_allocation desc,
    capacity_forecasts.threshold_crossing_at nulls last,
    capacity_forecasts.organization_name,
    capacity_forecasts.metric
limit :top;
