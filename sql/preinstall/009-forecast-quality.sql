-- 009-forecast-quality: how much a stored forecast can be trusted, so a
-- planner (report, marts, Grafana) sees it beside the numbers.
-- seasonal_naive_mase: backtest MASE of seasonal-naive on the same folds as
--   `mase` (the chosen model's); the bar a model has to beat.
-- is_low_confidence: no candidate beat seasonal-naive in the backtest (the
--   forecast is seasonal-naive by fallback and shows no skill beyond it).
-- interval_coverage: leave-one-fold-out share of backtest values inside the
--   95 % band as calibrated (null when there were too few folds).
-- interval_method: 'backtest' (band from the backtest errors) or 'model'
--   (the model's own interval: too little history to calibrate).

alter table analytics.forecasts
    add column seasonal_naive_mase double precision,
    add column is_low_confidence boolean not null default false,
    add column interval_coverage double precision
        check (interval_coverage between 0 and 1),
    add column interval_method text check (interval_method in ('backtest', 'model'));
