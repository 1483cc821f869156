"""analytics.forecasts.is_above_threshold and analytics.anomalies.resolution (sql/preinstall/006-analytics-flags.sql)."""

from __future__ import annotations

from alembic import op

from rmp.migrations import apply_sql

revision = "0004_analytics_flags"
down_revision = "0003_security"


def upgrade() -> None:
    apply_sql(op.get_bind(), "preinstall/006-analytics-flags.sql")


def downgrade() -> None:
    op.execute("alter table analytics.anomalies drop column if exists resolution")
    op.execute("alter table analytics.forecasts drop column if exists is_above_threshold")
