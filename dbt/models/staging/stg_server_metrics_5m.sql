{#- metrics.server_metrics_5m: one row per server and 5-minute bucket. -#}
{{ stg_server_metrics_tier('server_metrics_5m', bucket_as='bucket_start_at') }}
