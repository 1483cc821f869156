-- report_scaling_events: the report's "Scaling events" section — per
-- organization and event type, how many scaling events succeeded, failed or
-- were cancelled, their mean duration, cost and cores change, and the mean
-- cpu % before and after (marts.scaling_event_summary, weighted by events).
-- psql: psql -f sql/queries/report_scaling_events.sql
select
    o.name as organization,
    s.event_type,
    sum(s.count_events) as events,
    coalesce(sum(s.count_events) filter (where s.outcome = 'succeeded'), 0) as succeeded,
    coalesce(sum(s.count_events) filter (where s.outcome = 'failed'), 0) as failed,
    coalesce(sum(s.count_events) filter (where s.outcome = 'cancelled'), 0) as cancelled,
    sum(s.duration_avg_seconds * s.count_events) / nullif(sum(s.count_events), 0) as duration_avg_seconds,
    sum(s.cost_impact_total) as cost_impact_total,
    sum(s.cpu_cores_change_total) as cpu_cores_change_total,
    sum(s.cpu_before_avg_percent * s.count_events) filter (where s.cpu_before_avg_percent is not null)
        / nullif(sum(s.count_events) filter (where s.cpu_before_avg_percent is not null), 0) as cpu_before_avg_percent,
    sum(s.cpu_after_avg_percent * s.count_events) filter (where s.cpu_after_avg_percent is not null)
        / nullif(sum(s.count_events) filter (where s.cpu_after_avg_percent is not null), 0) as cpu_after_avg_percent
from marts.scaling_event_summary s
join tenancy.organizations o on o.id = s.organization_id
group by 1, 2
order by 1, 2;
