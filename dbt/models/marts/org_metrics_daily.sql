{#- Organization series, own servers, day (macros/org_metric_series.sql). -#}
{{ org_metric_series('stg_server_metrics_1d', 'day_start_at', include_children=false) }}
