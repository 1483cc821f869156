with

source as (
    select * from {{ source('analytics', 'anomalies') }}
),

renamed as (
    select
        id as anomaly_id,
        server_id,
        metric,
        detector,
        coalesce(resolution, '1h') as resolution,
        started_at,
        ended_at,
        observed as observed_value,
        expected as expected_value,
        score,
        direction,
        created_at
    from source
)

select * from renamed
