"""analytics.forecasts: seasonal_naive_mase, is_low_confidence, interval_coverage, interval_method
(sql/preinstall/009-forecast-quality.sql).
"""

from __future__ import annotations

from alembic import op

from rmp.migrations import apply_sql

revision = "0007_forecast_quality"
down_revision = "0006_api_tokens"


def upgrade() -> None:
    apply_sql(op.get_bind(), "preinstall/009-forecast-quality.sql")


def downgrade() -> None:
    for column in ("interval_method", "interval_coverage", "is_low_confidence", "seasonal_naive_mase"):
        op.execute(f"alter table analytics.forecasts drop column if exists {column}")
