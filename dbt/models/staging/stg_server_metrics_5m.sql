with

source as (
    select * from {{ source('metrics', 'server_metrics_5m') }}
),

renamed as (
    select
        bucket as bucket_start_at,
        server_id,
        {{- server_metric_aggregate_columns() }}
    from source
)

select * from renamed
