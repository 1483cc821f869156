"""Scaling events per organization, with outcome and a natural key (sql/preinstall/010-scaling-events.sql)."""

from __future__ import annotations

from alembic import op

from rmp.migrations import apply_idempotent, apply_sql

revision = "0008_scaling_events"
down_revision = "0007_forecast_quality"


def upgrade() -> None:
    apply_sql(op.get_bind(), "preinstall/010-scaling-events.sql")
    apply_idempotent(op.get_bind())


def downgrade() -> None:
    # organization-level events have no server: they cannot stay
    op.execute("delete from metrics.scaling_events where server_id is null")
    op.execute("drop trigger if exists scaling_events_organization on metrics.scaling_events")
    op.execute("drop function if exists metrics.scaling_event_organization()")
    op.execute("drop function if exists metrics.ingest_organizations()")
    op.execute("drop index if exists metrics.scaling_events_natural_key")
    op.execute("drop index if exists metrics.scaling_events_organization_time_idx")
    # tenant.scaling_events reads organization_id: rebuild it after the column goes
    op.execute("drop view if exists tenant.scaling_events cascade")
    op.execute("alter table metrics.scaling_events drop column outcome, drop column organization_id")
    op.execute("alter table metrics.scaling_events alter column server_id set not null")
    apply_idempotent(op.get_bind())
