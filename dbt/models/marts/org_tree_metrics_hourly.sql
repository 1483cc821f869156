{#- Organization series, servers and all sub-organizations' servers, hour (macros/org_metric_series.sql). -#}
{{ org_metric_series('stg_server_metrics_1h', 'hour_start_at', include_children=true) }}
