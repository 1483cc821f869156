{#- Scaling events per organization, server (null: organization-level
    events), event type and outcome: how many, how long they took, what they
    cost, and the load (cpu %) before and after. -#}

with

{{ import_ctes(events='stg_scaling_events') }},

summary as (
    select
        organization_id,
        server_id,
        event_type,
        coalesce(outcome, 'unknown') as outcome,
        count(*) as count_events,
        avg(duration_seconds) as duration_avg_seconds,
        sum(coalesce(cost_impact, 0)) as cost_impact_total,
        avg(cpu_before_percent) as cpu_before_avg_percent,
        avg(cpu_after_percent) as cpu_after_avg_percent,
        sum(coalesce(cpu_cores_after - cpu_cores_before, 0)) as cpu_cores_change_total,
        min(executed_at) as first_executed_at,
        max(executed_at) as last_executed_at
    from events
    group by 1, 2, 3, 4
),

final as (
    select
        organization_id,
        server_id,
        event_type,
        outcome,
        count_events::bigint as count_events,
        duration_avg_seconds::double precision as duration_avg_seconds,
        cost_impact_total::double precision as cost_impact_total,
        cpu_before_avg_percent::double precision as cpu_before_avg_percent,
        cpu_after_avg_percent::double precision as cpu_after_avg_percent,
        cpu_cores_change_total::bigint as cpu_cores_change_total,
        first_executed_at,
        last_executed_at
    from summary
)

select * from final
