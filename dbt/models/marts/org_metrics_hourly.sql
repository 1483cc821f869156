{#- Organization-wide hour over its own servers (macros/org_metric_series.sql). -#}
{{ org_metric_series('stg_server_metrics_1h', 'hour_start_at') }}
