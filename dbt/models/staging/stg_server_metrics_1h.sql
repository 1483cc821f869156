{#- metrics.server_metrics_1h: one row per server and hour. -#}
{{ stg_server_metrics_tier('server_metrics_1h', bucket_as='hour_start_at') }}
