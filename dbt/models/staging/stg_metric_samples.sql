with

source as (
    select * from {{ source('metrics', 'metric_samples') }}
),

metric_types as (
    select * from {{ source('metrics', 'metric_types') }}
),

renamed as (
    select
        source.server_id,
        source.collected_at,
        metric_types.name as metric_name,
        source.value as metric_value,
        source.labels
    from source
    inner join metric_types
        on metric_types.id = source.metric_type_id
)

select * from renamed
