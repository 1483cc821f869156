"""The report's "Scaling events" section: per organization and event type, how
many scaling events succeeded, failed or were cancelled, how long they took,
what they changed in cost and cores, and the load before and after.

Self-contained (issue 17.3): runs sql/queries/report_scaling_events.sql over
marts.scaling_event_summary, which dbt builds from metrics.scaling_events;
the report shows a note instead when the mart is not built yet.
"""

from __future__ import annotations

import psycopg

from rmp import queries


def gather_scaling(conn: psycopg.Connection) -> tuple[list[dict], str | None]:
    """(rows, note): one row per organization and event type; a note when there is nothing to show."""
    try:
        with conn.transaction():
            rows = queries.run_dicts(conn, "report_scaling_events")
    except psycopg.errors.UndefinedTable:
        return [], "marts.scaling_event_summary is not built yet (run `rmp dbt build`)."
    return rows, None if rows else "No scaling events recorded."
