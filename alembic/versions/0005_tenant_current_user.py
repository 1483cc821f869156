"""Organization hierarchy lock for the anti-cycle trigger (sql/preinstall/007-organization-hierarchy-lock.sql);
row visibility follows current_user (sql/idempotent/tenant-security.sql, re-applied).
"""

from __future__ import annotations

from alembic import op

from rmp.migrations import apply_idempotent, apply_sql

revision = "0005_tenant_current_user"
down_revision = "0004_analytics_flags"

# The check as revision 0001 created it (sql/preinstall/001-tenancy.sql).
_UNLOCKED_CHECK = """
create or replace function tenancy.reject_organization_cycle() returns trigger
language plpgsql as $$
begin
    if new.parent_id is null then
        return new;
    end if;
    if exists (
        with recursive ancestors(id, parent_id) as (
            select o.id, o.parent_id from tenancy.organizations o where o.id = new.parent_id
            union
            select o.id, o.parent_id
            from tenancy.organizations o
            join ancestors a on o.id = a.parent_id
        )
        select 1 from ancestors where id = new.id
    ) then
        raise exception 'organization % cannot have parent %: that would make a cycle', new.id, new.parent_id
            using errcode = 'check_violation';
    end if;
    return new;
end;
$$
"""


def upgrade() -> None:
    apply_sql(op.get_bind(), "preinstall/007-organization-hierarchy-lock.sql")
    apply_idempotent(op.get_bind())


def downgrade() -> None:
    op.execute(_UNLOCKED_CHECK)
    op.execute("drop table if exists tenancy.organization_hierarchy_lock")
    # The current_user policies stay: sql/idempotent/ is not versioned (0003's
    # downgrade drops them with the functions they call).
