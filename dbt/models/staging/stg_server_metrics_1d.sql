{#- metrics.server_metrics_1d: one row per server and UTC day. -#}
{{ stg_server_metrics_tier('server_metrics_1d', bucket_as='day_start_at', date_as='metrics_date') }}
