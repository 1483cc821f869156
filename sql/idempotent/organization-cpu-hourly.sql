-- organization-cpu-hourly: the triggers that keep metrics.organization_cpu_hourly
-- (sql/preinstall/012-organization-cpu-hourly.sql) equal to the raw rows of the
-- last two days, per organization and hour, whatever writes them:
--   * after INSERT / COPY into metrics.server_metrics: the inserted rows'
--     sums are added (transition table; rows skipped by ON CONFLICT DO NOTHING
--     are not in it);
--   * after DELETE / UPDATE of a row of the last two days (row triggers with a
--     WHEN clause: TimescaleDB refuses DELETE and UPDATE transition tables on
--     a hypertable with compression, and older rows cost only the WHEN test):
--     the old row's value subtracted, the new one's added;
--   * after TRUNCATE: emptied;
--   * a server moved to another organization, or deleted (before its rows
--     cascade away), takes its samples' sums along.
-- Inserts: one statement per batch, rows locked in (organization, hour) order.
-- Until revision 0011 has created the table this file does nothing.

do $guard$
begin
if to_regclass('metrics.organization_cpu_hourly') is null then
    return;
end if;

-- security definer: loaders write as rmp_ingest, which may read neither tenancy nor this table
create or replace function metrics.organization_cpu_after_write() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $f$
begin
    if tg_op = 'TRUNCATE' then
        delete from metrics.organization_cpu_hourly;
        return null;
    end if;
    insert into metrics.organization_cpu_hourly as hourly
            (organization_id, hour, cpu_percent_sum, cpu_sample_count)
        select
            servers.organization_id,
            public.time_bucket(interval '1 hour', inserted.collected_at),
            coalesce(sum(inserted.cpu_percent::numeric), 0),
            count(inserted.cpu_percent)
        from inserted_rows as inserted
        join tenancy.servers as servers on servers.id = inserted.server_id
        where inserted.collected_at >= now() - interval '2 days'
        group by 1, 2
        order by 1, 2
        on conflict (organization_id, hour) do update set
            cpu_percent_sum = hourly.cpu_percent_sum + excluded.cpu_percent_sum,
            cpu_sample_count = hourly.cpu_sample_count + excluded.cpu_sample_count;
    return null;
end
$f$;

-- one deleted or updated row of the last two days: its old value out, its new one in
create or replace function metrics.organization_cpu_row_change() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $f$
begin
    insert into metrics.organization_cpu_hourly as hourly
        (organization_id, hour, cpu_percent_sum, cpu_sample_count)
    select servers.organization_id, change.hour, sum(change.s), sum(change.n)
    from (
        select old.server_id, public.time_bucket(interval '1 hour', old.collected_at) as hour,
               -coalesce(old.cpu_percent::numeric, 0) as s, -(old.cpu_percent is not null)::int as n
        where old.collected_at >= now() - interval '2 days'
        union all
        select new.server_id, public.time_bucket(interval '1 hour', new.collected_at),
               coalesce(new.cpu_percent::numeric, 0), (new.cpu_percent is not null)::int
        where tg_op = 'UPDATE' and new.collected_at >= now() - interval '2 days'
    ) as change
    join tenancy.servers as servers on servers.id = change.server_id
    group by 1, 2
    order by 1, 2
    on conflict (organization_id, hour) do update set
        cpu_percent_sum = hourly.cpu_percent_sum + excluded.cpu_percent_sum,
        cpu_sample_count = hourly.cpu_sample_count + excluded.cpu_sample_count;
    return null;
end
$f$;

-- a server's samples of the last two days move from one organization to another
-- (to_organization null: the server is being deleted). The old organization's rows are
-- only updated, never inserted, and not at all when it is the organization being
-- deleted (its servers cascade from it): its rows go with it.
create or replace function metrics.organization_cpu_move_server(
    moved_server_id bigint, from_organization bigint, to_organization bigint
) returns void
language sql security definer set search_path = pg_catalog, pg_temp as $f$
    with moved as (
        select
            public.time_bucket(interval '1 hour', server_metrics.collected_at) as hour,
            coalesce(sum(server_metrics.cpu_percent::numeric), 0) as s,
            count(server_metrics.cpu_percent) as n
        from metrics.server_metrics as server_metrics
        where server_metrics.server_id = moved_server_id
          and server_metrics.collected_at >= now() - interval '2 days'
        group by 1
    ),
    taken_out as (
        update metrics.organization_cpu_hourly as hourly set
            cpu_percent_sum = hourly.cpu_percent_sum - moved.s,
            cpu_sample_count = hourly.cpu_sample_count - moved.n
        from moved
        where hourly.organization_id = from_organization and hourly.hour = moved.hour
          and exists (select from tenancy.organizations as o where o.id = from_organization)
    )
    insert into metrics.organization_cpu_hourly as hourly
        (organization_id, hour, cpu_percent_sum, cpu_sample_count)
    select to_organization, moved.hour, moved.s, moved.n
    from moved
    where to_organization is not null
    order by 1, 2
    on conflict (organization_id, hour) do update set
        cpu_percent_sum = hourly.cpu_percent_sum + excluded.cpu_percent_sum,
        cpu_sample_count = hourly.cpu_sample_count + excluded.cpu_sample_count
$f$;

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

drop trigger if exists organization_cpu_insert on metrics.server_metrics;
create trigger organization_cpu_insert after insert on metrics.server_metrics
    referencing new table as inserted_rows
    for each statement execute function metrics.organization_cpu_after_write();
drop trigger if exists organization_cpu_delete on metrics.server_metrics;
create trigger organization_cpu_delete after delete on metrics.server_metrics
    for each row when (old.collected_at >= now() - interval '2 days')
    execute function metrics.organization_cpu_row_change();
drop trigger if exists organization_cpu_update on metrics.server_metrics;
create trigger organization_cpu_update after update on metrics.server_metrics
    for each row when (old.collected_at >= now() - interval '2 days' or new.collected_at >= now() - interval '2 days')
    execute function metrics.organization_cpu_row_change();
drop trigger if exists organization_cpu_truncate on metrics.server_metrics;
create trigger organization_cpu_truncate after truncate on metrics.server_metrics
    for each statement execute function metrics.organization_cpu_after_write();

-- before the delete: the server's rows are still there to be summed (they cascade after)
drop trigger if exists organization_cpu_server_delete on tenancy.servers;
create trigger organization_cpu_server_delete before delete on tenancy.servers
    for each row execute function metrics.organization_cpu_server_change();
drop trigger if exists organization_cpu_server_move on tenancy.servers;
create trigger organization_cpu_server_move after update of organization_id on tenancy.servers
    for each row execute function metrics.organization_cpu_server_change();
end
$guard$;
