-- tenant-security: who sees which organization, and the privileges of the
-- three group roles (created in sql/preinstall/005-security.sql).
--   * tenancy.visible_organization_ids(): the organizations granted to the
--     login (tenancy.tenant_grants) and all their descendants;
--     tenancy.sees_all(): superusers and members of rmp_admin see everything.
--   * Row-level security on every tenancy table and analytics table.
--   * tenant.*: security-barrier views over the metric hypertables,
--     continuous aggregates and metrics.server_last_point, filtered the same
--     way (hypertables with columnstore refuse RLS; aggregates cannot have it).
--     dbt sources read these, and marts are security_invoker views, so a
--     mart shows an analyst only its organizations' rows.
--   * metrics.ingest_servers()/ingest_sites(): the name -> id resolution the
--     loader needs, so rmp_ingest never reads a tenancy table.
--   * Audit triggers on licences, organization_settings, memberships and
--     tenant_grants writing tenancy.audit_log.
-- Every idempotent file runs after each revision; until revision 0003 has
-- created tenancy.tenant_grants (and the aggregates exist) this one does
-- nothing, hence the guard around the whole file.

do $guard$
declare
    scoped record;
    tenant_view record;
begin
if to_regclass('tenancy.tenant_grants') is null or to_regclass('metrics.site_usage_daily') is null then
    return;
end if;

-- ------------------------------------------------------------ visibility
-- Visibility follows current_user, the role in effect: a login, a superuser
-- session after `SET ROLE ana_acme`, or an authenticator login after
-- `SET LOCAL ROLE ana_acme` (pooled connections, the HTTP API) all see what
-- ana_acme may see. Inside a security-definer function current_user is the
-- owner, so policies and views pass current_user in
-- (tenancy.organization_ids_visible_to(current_user)). Asking about a role
-- the session cannot become yields nothing: the session's login must be a
-- member of it (it is, whenever it could SET ROLE to it).

create or replace function tenancy.sees_all() returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $f$
    -- 'usage': privileges actually in effect, so a NOINHERIT member of
    -- rmp_admin sees everything only after SET ROLE rmp_admin
    select coalesce((select r.rolsuper from pg_roles r where r.rolname = current_user), false)
        or pg_has_role(current_user, 'rmp_admin', 'usage')
$f$;

create or replace function tenancy.organization_ids_visible_to(who name) returns setof bigint
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $f$
    with recursive visible(id) as (
        select g.organization_id from tenancy.tenant_grants g
        where g.login = who and pg_has_role(session_user, who, 'member')
        union
        select o.id from tenancy.organizations o join visible v on o.parent_id = v.id
    )
    select id from visible
$f$;

create or replace function tenancy.server_ids_visible_to(who name) returns setof bigint
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $f$
    select s.id from tenancy.servers s
    where s.organization_id in (select tenancy.organization_ids_visible_to(who))
$f$;

-- Sites owned by a visible organization, or by a user who is a member of one.
create or replace function tenancy.site_ids_visible_to(who name) returns setof bigint
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $f$
    select s.id from tenancy.sites s
    where s.organization_id in (select tenancy.organization_ids_visible_to(who))
       or s.user_id in (select m.user_id from tenancy.memberships m
                        where m.organization_id in (select tenancy.organization_ids_visible_to(who)))
$f$;

-- The caller's sets (security invoker, so current_user is the caller's role):
-- what `rmp tenant` and ad-hoc SQL use.
create or replace function tenancy.visible_organization_ids() returns setof bigint
language sql stable security invoker
set search_path = pg_catalog, pg_temp
as $f$
    select tenancy.organization_ids_visible_to(current_user)
$f$;

create or replace function tenancy.visible_server_ids() returns setof bigint
language sql stable security invoker
set search_path = pg_catalog, pg_temp
as $f$
    select tenancy.server_ids_visible_to(current_user)
$f$;

create or replace function tenancy.visible_site_ids() returns setof bigint
language sql stable security invoker
set search_path = pg_catalog, pg_temp
as $f$
    select tenancy.site_ids_visible_to(current_user)
$f$;

-- --------------------------------------------------------- ingest lookup

create or replace function metrics.ingest_servers()
returns table (id bigint, name text, organization_id bigint, organization_slug text, organization_name text)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $f$
    select s.id, s.name, o.id, o.slug, o.name
    from tenancy.servers s join tenancy.organizations o on o.id = s.organization_id
$f$;

create or replace function metrics.ingest_sites()
returns table (id bigint, name text, organization_id bigint, organization_slug text, organization_name text)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $f$
    select s.id, s.name, o.id, o.slug, o.name
    from tenancy.sites s left join tenancy.organizations o on o.id = s.organization_id
$f$;

-- Organizations by id, slug and name: what scaling events without a server name.
create or replace function metrics.ingest_organizations()
returns table (id bigint, slug text, name text)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $f$
    select o.id, o.slug, o.name from tenancy.organizations o
$f$;

revoke execute on function metrics.ingest_organizations() from public;
grant execute on function metrics.ingest_organizations() to rmp_ingest, rmp_admin;
revoke execute on function metrics.ingest_servers() from public;
revoke execute on function metrics.ingest_sites() from public;
grant execute on function metrics.ingest_servers() to rmp_ingest, rmp_admin;
grant execute on function metrics.ingest_sites() to rmp_ingest, rmp_admin;

-- ----------------------------------------------------------------- audit
-- Security definer so that writers need no privilege on audit_log (and so
-- cannot forge rows); acting_role is read from the `role` setting because
-- current_user is the function owner here.

create or replace function tenancy.audit_change() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $f$
declare
    old_row jsonb := to_jsonb(old);
    new_row jsonb := to_jsonb(new);
begin
    if tg_op = 'UPDATE' and old_row = new_row then
        return null;   -- nothing changed
    end if;
    insert into tenancy.audit_log (login, acting_role, table_name, action, organization_id, old_row, new_row)
    values (session_user,
            coalesce(nullif(current_setting('role'), 'none'), session_user),
            tg_table_name,
            lower(tg_op),
            coalesce((new_row ->> 'organization_id')::bigint, (old_row ->> 'organization_id')::bigint),
            old_row,
            new_row);
    return null;
end
$f$;

create or replace trigger licences_audit
    after insert or update or delete on tenancy.licences
    for each row execute function tenancy.audit_change();
create or replace trigger organization_settings_audit
    after insert or update or delete on tenancy.organization_settings
    for each row execute function tenancy.audit_change();
create or replace trigger memberships_audit
    after insert or update or delete on tenancy.memberships
    for each row execute function tenancy.audit_change();
create or replace trigger tenant_grants_audit
    after insert or update or delete on tenancy.tenant_grants
    for each row execute function tenancy.audit_change();

-- ------------------------------------------------- row-level security
-- One policy per table, for every command: admins (tenancy.sees_all()) see
-- every row, anyone else the rows of the table's predicate (none: admins
-- only). The table owner (the migrating role) bypasses it, so jobs and
-- migrations see everything.

for scoped in
    select t.table_name, t.visible_rows from (values
        ('tenancy.organizations', 'id in (select tenancy.organization_ids_visible_to(current_user))'),
        ('tenancy.users', 'id in (select m.user_id from tenancy.memberships m where m.organization_id in '
                          '(select tenancy.organization_ids_visible_to(current_user)))'),
        ('tenancy.memberships', 'organization_id in (select tenancy.organization_ids_visible_to(current_user))'),
        ('tenancy.servers', 'organization_id in (select tenancy.organization_ids_visible_to(current_user))'),
        ('tenancy.sites', 'id in (select tenancy.site_ids_visible_to(current_user))'),
        ('tenancy.applications', 'organization_id in (select tenancy.organization_ids_visible_to(current_user))'),
        ('tenancy.databases', 'organization_id in (select tenancy.organization_ids_visible_to(current_user))'),
        ('tenancy.deployments', 'organization_id in (select tenancy.organization_ids_visible_to(current_user))'),
        ('tenancy.licences', 'organization_id in (select tenancy.organization_ids_visible_to(current_user))'),
        ('tenancy.organization_settings',
         'organization_id in (select tenancy.organization_ids_visible_to(current_user))'),
        -- a role sees its own grants (what `rmp tenant list` shows it)
        ('tenancy.tenant_grants', 'login = current_user'),
        ('tenancy.audit_log', null),
        ('analytics.forecasts',
         '(entity_type = ''server'' and entity_id in (select tenancy.server_ids_visible_to(current_user)))'
         ' or (entity_type = ''organization'''
         ' and entity_id in (select tenancy.organization_ids_visible_to(current_user)))'),
        ('analytics.anomalies', 'server_id in (select tenancy.server_ids_visible_to(current_user))'),
        -- a report run belongs to no organization (it covers the fleet)
        ('analytics.report_runs', null)
    ) as t (table_name, visible_rows)
loop
    execute format('alter table %s enable row level security', scoped.table_name);
    execute format('drop policy if exists tenant_scope on %s', scoped.table_name);
    execute format('create policy tenant_scope on %s using (%s)', scoped.table_name,
                   concat_ws(' or ', '(select tenancy.sees_all())', scoped.visible_rows));
end loop;

-- ------------------------------------------------------- tenant views
-- Owned by the migrating role, so they read schema metrics with its rights;
-- security_barrier keeps a caller's functions from seeing filtered rows.
-- One view per metric relation, filtered by the column that says whose row
-- it is; every tier of metrics.server_metrics (the catalog's
-- metrics.aggregate_tiers) gets one without an edit here.

for tenant_view in
    select v.relation, v.owner_column from (values
        ('server_metrics', 'server_id'), ('metric_samples', 'server_id'), ('server_last_point', 'server_id'),
        ('site_usage', 'site_id'), ('site_usage_daily', 'site_id')
    ) as v (relation, owner_column)
    union all
    select t.view_name, 'server_id' from metrics.aggregate_tiers t
    where to_regclass(format('metrics.%I', t.view_name)) is not null
loop
    execute format($v$
        create or replace view tenant.%1$I with (security_barrier) as
        select m.* from metrics.%1$I m
        where (select tenancy.sees_all()) or m.%2$I in (select tenancy.%3$I(current_user))
    $v$, tenant_view.relation, tenant_view.owner_column,
         case tenant_view.owner_column when 'site_id' then 'site_ids_visible_to' else 'server_ids_visible_to' end);
end loop;

-- Scaling events carry organization_id from revision 0008 on (organization-
-- level events have no server); before it, by server. (The revision's new
-- columns come last, so `create or replace` may add them to the view.)
if exists (select 1 from pg_attribute where attrelid = 'metrics.scaling_events'::regclass
           and attname = 'organization_id' and not attisdropped) then
    create or replace view tenant.scaling_events with (security_barrier) as
    select m.* from metrics.scaling_events m
    where (select tenancy.sees_all())
       or m.organization_id in (select tenancy.organization_ids_visible_to(current_user));
else
    create or replace view tenant.scaling_events with (security_barrier) as
    select m.* from metrics.scaling_events m
    where (select tenancy.sees_all()) or m.server_id in (select tenancy.server_ids_visible_to(current_user));
end if;

create or replace view tenant.metric_types as
select * from metrics.metric_types;

-- ------------------------------------------------------------ privileges

grant usage on schema tenancy, metrics, analytics, tenant to rmp_admin;
grant all on all tables in schema tenancy, metrics, analytics, tenant to rmp_admin;
grant all on all sequences in schema tenancy, metrics, analytics to rmp_admin;
-- the audit log is append-only, and only through the trigger: admins read it
-- and nothing else (no TRIGGER, REFERENCES or TRUNCATE either)
revoke all on tenancy.audit_log from rmp_admin;
grant select on tenancy.audit_log to rmp_admin;

grant usage on schema metrics to rmp_ingest;
-- select too: the loader's `insert ... on conflict (key) do nothing` needs it
-- (a column-level grant on the key fails: TimescaleDB copies it to the
-- compressed hypertable, whose columns differ). Metrics only, every tenant:
-- ingest is the fleet's loader, not a tenant.
grant select, insert on metrics.server_metrics, metrics.metric_samples, metrics.site_usage,
    metrics.scaling_events to rmp_ingest;
-- from revision 0012 on, server_metrics is a view over server_samples: rmp ingest and rmp collect
-- write the table, the view's INSERT trigger writes it with the caller's rights
if to_regclass('metrics.server_samples') is not null then
    grant select, insert on metrics.server_samples to rmp_ingest;
end if;
-- the loader reads the type catalog and de-duplicates its own rejections
grant select on metrics.metric_types to rmp_ingest;
grant select, insert on metrics.rejected_rows to rmp_ingest;

grant usage on schema tenancy, analytics, tenant to rmp_analyst;
grant select on tenancy.organizations, tenancy.users, tenancy.memberships, tenancy.servers, tenancy.sites,
    tenancy.applications, tenancy.databases, tenancy.deployments, tenancy.licences,
    tenancy.organization_settings, tenancy.tenant_grants
    to rmp_analyst;
grant select on all tables in schema analytics to rmp_analyst;
grant select on all tables in schema tenant to rmp_analyst;

end
$guard$;
