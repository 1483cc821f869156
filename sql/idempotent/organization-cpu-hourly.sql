-- organization-cpu-hourly: the triggers that keep metrics.organization_cpu_hourly
-- (sql/preinstall/012-organization-cpu-hourly.sql) equal to the raw rows of the
-- last two days, per organization and hour, whatever writes them.
-- The triggers are on the hypertable that holds server_metrics' rows: metrics.raw_table(),
-- metrics.server_samples from revision 0012 on (server_metrics is then a view over it),
-- and read its columns through metrics.raw_column() (rmp/migrations.py publish_raw_layout).
--
--   * after INSERT / COPY into metrics.server_metrics: the inserted rows'
--     sums are added (transition table; rows skipped by ON CONFLICT DO NOTHING
--     are not in it);
--   * after DELETE / UPDATE: the changed rows' old values subtracted and new
--     ones added, once per statement (sql/idempotent/read-path-changes.sql:
--     TimescaleDB refuses DELETE and UPDATE transition tables on a hypertable
--     with compression, so row triggers only log each changed row and a
--     statement trigger applies the log);
--   * after TRUNCATE: emptied;
--   * a server moved to another organization, or deleted (before its rows
--     cascade away), takes its samples' sums along.
-- Every change goes through one upsert, metrics.organization_cpu_hourly_add:
-- one statement per batch, rows locked in (organization, hour) order (no
-- deadlock between concurrent writers).
-- Until revision 0011 has created the table this file does nothing.

do $guard$
begin
if to_regclass('metrics.organization_cpu_hourly') is null then
    return;
end if;

-- The one upsert of the table: deltas per (organization, hour), summed per key first
-- (ON CONFLICT may touch a row once per statement), in key order. plpgsql: its plan is kept
-- for the session. Not security definer: it runs with the rights of its callers below (the
-- table's owner); nobody else may call it.
create or replace function metrics.organization_cpu_hourly_add(
    organization_ids bigint[], hours timestamptz[], sums numeric[], counts bigint[]
) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $f$
begin
    if organization_ids is null then
        return;
    end if;
    insert into metrics.organization_cpu_hourly as hourly
        (organization_id, hour, cpu_percent_sum, cpu_sample_count)
    select delta.organization_id, delta.hour, sum(delta.s), sum(delta.n)
    from unnest(organization_ids, hours, sums, counts) as delta (organization_id, hour, s, n)
    group by 1, 2
    order by 1, 2
    on conflict (organization_id, hour) do update set
        cpu_percent_sum = hourly.cpu_percent_sum + excluded.cpu_percent_sum,
        cpu_sample_count = hourly.cpu_sample_count + excluded.cpu_sample_count;
end
$f$;
revoke execute on function metrics.organization_cpu_hourly_add(bigint[], timestamptz[], numeric[], bigint[]) from public;

-- security definer: loaders write as rmp_ingest, which may read neither tenancy nor this table
-- the CPU of an inserted row, read from the raw hypertable's transition table (metrics.raw_column)
execute format($create$
create or replace function metrics.organization_cpu_after_write() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $f$
begin
    if tg_op = 'TRUNCATE' then
        delete from metrics.organization_cpu_hourly;
        return null;
    end if;
    perform metrics.organization_cpu_hourly_add(
        array_agg(per_hour.organization_id), array_agg(per_hour.hour), array_agg(per_hour.s), array_agg(per_hour.n))
    from (
        select
            servers.organization_id,
            public.time_bucket(interval '1 hour', inserted.collected_at) as hour,
            coalesce(sum((%1$s)::numeric), 0) as s,
            count(%1$s) as n
        from inserted_rows as inserted
        join tenancy.servers as servers on servers.id = inserted.server_id
        where inserted.collected_at >= now() - interval '2 days'
        group by 1, 2
    ) as per_hour;
    return null;
end
$f$
$create$, metrics.raw_column('cpu_percent', 'inserted'));

-- a server's samples of the last two days move from one organization to another
-- (to_organization null: the server is being deleted). Not the organization being
-- deleted (its servers cascade from it): its rows go with it.
create or replace function metrics.organization_cpu_move_server(
    moved_server_id bigint, from_organization bigint, to_organization bigint
) returns void
language sql security definer set search_path = pg_catalog, pg_temp as $f$
    select metrics.organization_cpu_hourly_add(
        array_agg(side.organization_id), array_agg(moved.hour),
        array_agg(side.sign * moved.s), array_agg(side.sign * moved.n))
    from (
        select
            public.time_bucket(interval '1 hour', server_metrics.collected_at) as hour,
            coalesce(sum(server_metrics.cpu_percent::numeric), 0) as s,
            count(server_metrics.cpu_percent) as n
        from metrics.server_metrics as server_metrics
        where server_metrics.server_id = moved_server_id
          and server_metrics.collected_at >= now() - interval '2 days'
        group by 1
    ) as moved
    cross join (values (from_organization, -1), (to_organization, 1)) as side (organization_id, sign)
    where exists (select from tenancy.organizations as o where o.id = side.organization_id)
$f$;
-- security definer: any role could otherwise move sums between organizations
revoke execute on function metrics.organization_cpu_move_server(bigint, bigint, bigint) from public;

create or replace function metrics.organization_cpu_server_change() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $f$
begin
    if tg_op = 'DELETE' then
        perform metrics.organization_cpu_move_server(old.id, old.organization_id, null);
        return old;
    end if;
    if new.organization_id is distinct from old.organization_id then
        perform metrics.organization_cpu_move_server(new.id, old.organization_id, new.organization_id);
    end if;
    return null;
end
$f$;

execute format($trigger$drop trigger if exists organization_cpu_insert on %1$s$trigger$, metrics.raw_table());
execute format($trigger$create trigger organization_cpu_insert after insert on %1$s
    referencing new table as inserted_rows
    for each statement execute function metrics.organization_cpu_after_write()$trigger$, metrics.raw_table());
-- 0011's row triggers and their function (before read-path-changes.sql)
execute format($trigger$drop trigger if exists organization_cpu_delete on %1$s$trigger$, metrics.raw_table());
execute format($trigger$drop trigger if exists organization_cpu_update on %1$s$trigger$, metrics.raw_table());
drop function if exists metrics.organization_cpu_row_change();
execute format($trigger$drop trigger if exists organization_cpu_truncate on %1$s$trigger$, metrics.raw_table());
execute format($trigger$create trigger organization_cpu_truncate after truncate on %1$s
    for each statement execute function metrics.organization_cpu_after_write()$trigger$, metrics.raw_table());

-- before the delete: the server's rows are still there to be summed (they cascade after)
drop trigger if exists organization_cpu_server_delete on tenancy.servers;
create trigger organization_cpu_server_delete before delete on tenancy.servers
    for each row execute function metrics.organization_cpu_server_change();
drop trigger if exists organization_cpu_server_move on tenancy.servers;
create trigger organization_cpu_server_move after update of organization_id on tenancy.servers
    for each row execute function metrics.organization_cpu_server_change();
end
$guard$;
