with

source as (
    select * from {{ source('metrics', 'scaling_events') }}
),

renamed as (
    select
        id as scaling_event_id,
        organization_id,
        server_id,
        event_type,
        trigger_reason,
        outcome,
        error_details,
        cost_impact::double precision as cost_impact,
        executed_at,
        completed_at,
        extract(epoch from completed_at - executed_at)::double precision as duration_seconds,
        (before_state ->> 'cpu_percent')::double precision as cpu_before_percent,
        (after_state ->> 'cpu_percent')::double precision as cpu_after_percent,
        (before_state ->> 'cpu_cores')::integer as cpu_cores_before,
        (after_state ->> 'cpu_cores')::integer as cpu_cores_after,
        before_state,
        after_state
    from source
)

select * from renamed
