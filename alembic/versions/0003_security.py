"""Roles, tenant grants, audit log; row-level security and tenant views (sql/idempotent/tenant-security.sql)."""

from __future__ import annotations

from alembic import op

from rmp.migrations import apply_idempotent, apply_sql

revision = "0003_security"
down_revision = "0002_aggregates"

ROLES = ("rmp_ingest", "rmp_analyst", "rmp_admin")

RLS_TABLES = (
    "tenancy.organizations", "tenancy.users", "tenancy.memberships", "tenancy.servers", "tenancy.sites",
    "tenancy.applications", "tenancy.databases", "tenancy.deployments", "tenancy.licences",
    "tenancy.organization_settings", "analytics.forecasts", "analytics.anomalies", "analytics.report_runs",
)
AUDITED = ("licences", "organization_settings", "memberships")


def upgrade() -> None:
    apply_sql(op.get_bind(), "preinstall/005-security.sql")
    apply_idempotent(op.get_bind())


def downgrade() -> None:
    # dbt's staging/marts views read tenant.*: they go with it (cascade) and
    # come back with the next `dbt build`.
    op.execute("drop schema if exists tenant cascade")
    for table in RLS_TABLES:
        op.execute(f"drop policy if exists tenant_scope on {table}")
        op.execute(f"alter table {table} disable row level security")
    for table in AUDITED:
        op.execute(f"drop trigger if exists {table}_audit on tenancy.{table}")
    op.execute("drop table if exists tenancy.tenant_grants, tenancy.audit_log")
    for fn in ("tenancy.audit_change()", "tenancy.visible_site_ids()", "tenancy.site_ids_visible_to(name)",
               "tenancy.server_ids_visible_to(name)", "tenancy.organization_ids_visible_to(name)", "tenancy.visible_server_ids()",
               "tenancy.visible_organization_ids()", "tenancy.sees_all()",
               "metrics.ingest_servers()", "metrics.ingest_sites()"):
        op.execute(f"drop function if exists {fn}")
    # Privileges in this database go; the roles themselves only if no other
    # database still refers to them (roles are cluster-wide).
    op.execute("drop owned by " + ", ".join(ROLES))
    op.execute(
        """
        do $$
        declare r text;
        begin
            foreach r in array array['rmp_ingest', 'rmp_analyst', 'rmp_admin'] loop
                begin
                    execute format('drop role if exists %I', r);
                exception when dependent_objects_still_exist then
                    raise notice 'role % kept: other databases use it', r;
                end;
            end loop;
        end
        $$
        """
    )
