with

source as (
    select * from {{ source('metrics', 'server_metrics_1h') }}
),

renamed as (
    select
        bucket as hour_start_at,
        server_id,
        {{- server_metric_aggregate_columns() }}
    from source
)

select * from renamed
