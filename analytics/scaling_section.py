"""The report's "Scaling events" section: per organization and event type, how
many scaling events succeeded, failed or were cancelled, how long they took,
what they changed in cost and cores, and the load before and after.

Self-contained (issue 17.3): reads marts.scaling_event_summary, which dbt
builds from metrics.scaling_events; the report shows a note instead when the
mart is not built yet.
"""

from __future__ import annotations

import psycopg

QUERY = """
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
order by 1, 2
"""


def gather_scaling(conn: psycopg.Connection) -> tuple[list[dict], str | None]:
    """(rows, note): one row per organization and event type; a note when there is nothing to show."""
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(QUERY)
            cols = [d.name for d in cur.description]
            rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    except psycopg.errors.UndefinedTable:
        return [], "marts.scaling_event_summary is not built yet (run `rmp dbt build`)."
    return rows, None if rows else "No scaling events recorded."
