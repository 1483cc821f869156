-- 005-security: the group roles, the tenant grant table and the audit log.
-- Applied once by alembic revision 0003; the functions, row-level security
-- policies, tenant views and privileges that use these objects are in
-- sql/idempotent/tenant-security.sql (re-applied on every migration).
--
-- Roles are NOLOGIN groups without passwords; a database login gets access
-- by membership (`grant rmp_analyst to alice`) plus, for analysts, a row in
-- tenancy.tenant_grants naming the organizations it may see (`rmp tenant
-- grant ORG LOGIN` does both). Roles are cluster-wide, so creating them is
-- conditional: another database on the server may have made them already.
--   rmp_ingest   inserts metrics (COPY + staging), records rejected rows,
--                resolves server/site names through two functions; reads no
--                tenancy table, no mart, no aggregate
--   rmp_analyst  reads marts, tenant.* views (aggregates and raw metrics
--                filtered to its organizations), tenancy and analytics tables
--                under row-level security
--   rmp_admin    everything in the platform schemas, every organization

do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'rmp_ingest') then
        create role rmp_ingest nologin;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'rmp_analyst') then
        create role rmp_analyst nologin;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'rmp_admin') then
        create role rmp_admin nologin;
    end if;
end
$$;

-- Security-barrier views over the metric hypertables and continuous
-- aggregates, filtered to the caller's organizations. TimescaleDB refuses
-- row-level security on hypertables with columnstore (compression) enabled
-- and continuous aggregates cannot carry policies, so analysts read these
-- instead of schema metrics.
create schema if not exists tenant;

-- Which login sees which organizations (and all their descendants).
-- login is a role name; roles live outside the database, so no foreign key:
-- `rmp tenant grant` checks that the role exists.
create table tenancy.tenant_grants (
    login            name not null,
    organization_id  bigint not null references tenancy.organizations (id) on delete cascade,
    granted_by       name not null default session_user,
    granted_at       timestamptz not null default now(),
    primary key (login, organization_id)
);
create index tenant_grants_organization_idx on tenancy.tenant_grants (organization_id);

-- Administrative changes, written only by the trigger function
-- tenancy.audit_change (security definer): nobody is granted insert, update
-- or delete here. organization_id has no foreign key so history outlives a
-- deleted organization.
create table tenancy.audit_log (
    id               bigint generated always as identity primary key,
    occurred_at      timestamptz not null default now(),
    login            name not null,          -- session_user: who connected
    acting_role      name not null,          -- the role in effect (SET ROLE), else the login
    table_name       text not null,
    action           text not null check (action in ('insert', 'update', 'delete')),
    organization_id  bigint,
    old_row          jsonb,
    new_row          jsonb
);
create index audit_log_organization_idx on tenancy.audit_log (organization_id, occurred_at desc);
create index audit_log_occurred_idx on tenancy.audit_log (occurred_at desc);
