"""Bearer tokens of the metrics HTTP API (sql/preinstall/008-api-tokens.sql; functions in sql/idempotent/api.sql)."""

from __future__ import annotations

from alembic import op

from rmp.migrations import apply_idempotent, apply_sql

revision = "0006_api_tokens"
down_revision = "0005_tenant_current_user"


def upgrade() -> None:
    apply_sql(op.get_bind(), "preinstall/008-api-tokens.sql")
    apply_idempotent(op.get_bind())


def downgrade() -> None:
    op.execute("drop function if exists tenancy.api_token_role(text)")
    op.execute("drop function if exists tenant.aggregate_refreshes()")
    op.execute("drop table if exists tenancy.api_tokens")
