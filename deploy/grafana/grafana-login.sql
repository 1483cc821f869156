-- grafana-login: the read-only database login Grafana's data source uses
-- (deploy/grafana/provisioning/datasources/timescaledb.yml).
--
--   psql "$DATABASE_URL" -v grafana_login=rmp_grafana -v grafana_password=SECRET \
--        -f deploy/grafana/grafana-login.sql
--
-- The login is a member of rmp_analyst: it reads marts.*, tenant.*, the
-- tenancy and analytics tables under row-level security, never schema
-- metrics, and every transaction it starts is read-only. It is granted every
-- top-level organization (and so, through the hierarchy, all of them) as of
-- now; run this again after adding a top-level organization, or grant fewer
-- with `rmp tenant revoke` for a per-tenant Grafana. Safe to re-run: it
-- updates the password and adds only missing grants.
\set ON_ERROR_STOP on
select set_config('rmp.grafana_login', :'grafana_login', false),
       set_config('rmp.grafana_password', :'grafana_password', false) \gset

do $$
declare
    login name := current_setting('rmp.grafana_login');
begin
    if not exists (select 1 from pg_roles where rolname = login) then
        execute format('create role %I login', login);
    end if;
    execute format('alter role %I login nosuperuser nocreatedb nocreaterole noreplication password %L',
                   login, current_setting('rmp.grafana_password'));
    execute format('alter role %I set default_transaction_read_only = on', login);
    execute format('grant rmp_analyst to %I', login);
    insert into tenancy.tenant_grants (login, organization_id)
    select login, o.id from tenancy.organizations o where o.parent_id is null
    on conflict do nothing;
end
$$;

select set_config('rmp.grafana_password', '', false) \gset
