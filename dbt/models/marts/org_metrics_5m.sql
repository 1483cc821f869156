{#- Organization series, own servers, 5 minutes (macros/org_metric_series.sql). -#}
{{ org_metric_series('stg_server_metrics_5m', 'bucket_start_at', include_children=false) }}
