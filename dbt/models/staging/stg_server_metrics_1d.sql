with

source as (
    select * from {{ source('metrics', 'server_metrics_1d') }}
),

renamed as (
    select
        bucket as day_start_at,
        (bucket at time zone 'UTC')::date as metrics_date,
        server_id,
        {{- server_metric_aggregate_columns() }}
    from source
)

select * from renamed
