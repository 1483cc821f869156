with

source as (
    select * from {{ source('analytics', 'forecasts') }}
),

renamed as (
    select
        id as forecast_id,
        run_id,
        entity_type,
        entity_id,
        metric,
        model,
        horizon_start as horizon_start_at,
        status as forecast_status,
        trend,
        slope_per_day,
        -- the forecast's first point (forecast: [{at, yhat, lo, hi}, ...])
        (forecast -> 0 ->> 'yhat')::double precision as first_forecast_value,
        threshold,
        threshold_crossing_at,
        crossing_lo_at,
        crossing_hi_at,
        is_above_threshold,
        mase as backtest_mase,
        seasonal_naive_mase as seasonal_naive_backtest_mase,
        is_low_confidence,
        interval_coverage,
        interval_method,
        created_at
    from source
)

select * from renamed
