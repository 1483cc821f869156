-- server-last-point: the latest sample of every server (its "current" state),
-- one row per server that has reported: metrics.server_last_point.
--
-- The triggers are on the hypertable that holds server_metrics' rows: metrics.raw_table(),
-- metrics.server_samples from revision 0012 on (server_metrics is then a view over it),
-- and read its columns through metrics.raw_column() (rmp/migrations.py publish_raw_layout).
--
-- From revision 0011 on it reads metrics.server_latest (one row per server,
-- sql/preinstall/011-server-latest.sql), which triggers on
-- metrics.server_metrics keep equal to the raw rows:
--   * after INSERT / COPY (transition table of the inserted rows): the newest
--     inserted row of each server replaces the stored one if it is newer. One
--     statement per batch, rows locked in server order (no deadlock between
--     concurrent loaders); rows skipped by ON CONFLICT DO NOTHING are not in
--     the transition table.
--   * after DELETE / UPDATE: re-derived from the raw rows for the servers whose
--     rows of the last two days the statement changed, and for those whose
--     stored last point is older than that (metrics.server_latest_refresh, one
--     index probe per such server; sql/idempotent/read-path-changes.sql).
--   * after TRUNCATE: emptied.
-- A transition-table trigger makes TimescaleDB 2.23 skip COPY's continuous-
-- aggregate invalidations; sql/idempotent/cagg-copy-invalidations.sql logs them.
-- Before 0011 (an older schema being upgraded) the view derives it directly.
-- Both derive it with the same query (metrics.server_last_point_select), one
-- probe of the (server_id, collected_at desc) index per server.
-- From revision 0010 on both show the latest sample's interval_seconds, so
-- staleness is judged against each server's own sampling interval
-- (marts.server_current); the guards keep the file valid before 0010.

-- The query over the raw rows, with or without 0010's interval_seconds, for the
-- servers the filter keeps (a WHERE clause over `servers`, or nothing).
create or replace function metrics.server_last_point_select(with_interval boolean, server_filter text)
returns text
language sql immutable as $f$
select format($v$
select
    servers.id as server_id,
    last_point.collected_at as last_metrics_at,
    last_point.cpu_percent,
    last_point.memory_percent,
    last_point.memory_used_bytes,
    last_point.disk_percent,
    last_point.disk_used_bytes,
    last_point.load_1m%1$s
from tenancy.servers as servers
cross join lateral (
    select
        server_metrics.collected_at,
        server_metrics.cpu_percent,
        server_metrics.memory_percent,
        server_metrics.memory_used_bytes,
        server_metrics.disk_percent,
        server_metrics.disk_used_bytes,
        server_metrics.load_1m%2$s
    from metrics.server_metrics as server_metrics
    where server_metrics.server_id = servers.id
    order by server_metrics.collected_at desc
    limit 1
) as last_point
%3$s$v$,
    case when with_interval then E',\n    last_point.interval_seconds' else '' end,
    case when with_interval then E',\n        server_metrics.interval_seconds' else '' end,
    server_filter)
$f$;

-- The view over the raw rows (before 0011, and 0011's downgrade on its way back).
create or replace function metrics.create_server_last_point_view_on_raw() returns void
language plpgsql as $f$
declare
    has_interval boolean := exists (
        select from pg_attribute
        where attrelid = 'metrics.server_metrics'::regclass and attname = 'interval_seconds' and not attisdropped);
begin
    execute 'create or replace view metrics.server_last_point as '
            || metrics.server_last_point_select(has_interval, '');
end
$f$;

do $guard$
begin
if to_regclass('metrics.server_latest') is null then
    perform metrics.create_server_last_point_view_on_raw();
    return;
end if;

-- the truth from the raw rows, with the view's columns (in metrics.server_latest's order)
execute format($create$
create or replace function metrics.server_last_point_from_raw()
returns table (
    server_id bigint,
    last_metrics_at timestamptz,
    cpu_percent double precision,
    memory_percent double precision,
    memory_used_bytes bigint,
    disk_percent double precision,
    disk_used_bytes bigint,
    load_1m double precision,
    interval_seconds double precision
)
language sql stable as %L
$create$, metrics.server_last_point_select(true, ''));

-- security definer: loaders write as rmp_ingest, which may not touch the table itself
execute format($create$
create or replace function metrics.server_latest_after_insert() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $f$
begin
    insert into metrics.server_latest as latest
    select distinct on (inserted.server_id)
        inserted.server_id,
        inserted.collected_at,
        %1$s,
        %2$s,
        %3$s,
        %4$s,
        %5$s,
        %6$s,
        inserted.interval_seconds
    from inserted_rows as inserted
    order by inserted.server_id, inserted.collected_at desc
    on conflict (server_id) do update set
        collected_at = excluded.collected_at,
        cpu_percent = excluded.cpu_percent,
        memory_percent = excluded.memory_percent,
        memory_used_bytes = excluded.memory_used_bytes,
        disk_percent = excluded.disk_percent,
        disk_used_bytes = excluded.disk_used_bytes,
        load_1m = excluded.load_1m,
        interval_seconds = excluded.interval_seconds
    where excluded.collected_at > latest.collected_at;
    return null;
end
$f$
$create$, metrics.raw_column('cpu_percent', 'inserted'), metrics.raw_column('memory_percent', 'inserted'), metrics.raw_column('memory_used_bytes', 'inserted'), metrics.raw_column('disk_percent', 'inserted'), metrics.raw_column('disk_used_bytes', 'inserted'), metrics.raw_column('load_1m', 'inserted'));

-- The given servers' stored last points re-derived from the raw rows (servers without rows
-- lose theirs), in one statement, rows locked in server order; plpgsql: its plan is kept for
-- the session. No security definer: it runs with the rights of its caller
-- (metrics.read_path_apply_changes); nobody else may call it.
execute format($create$
create or replace function metrics.server_latest_refresh(server_ids bigint[]) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $f$
begin
    with truth as (%s),
    gone as (
        delete from metrics.server_latest as latest
        where latest.server_id = any(server_ids)
          and not exists (select from truth where truth.server_id = latest.server_id)
    )
    insert into metrics.server_latest as latest
    select * from truth order by truth.server_id
    on conflict (server_id) do update set
        collected_at = excluded.collected_at,
        cpu_percent = excluded.cpu_percent,
        memory_percent = excluded.memory_percent,
        memory_used_bytes = excluded.memory_used_bytes,
        disk_percent = excluded.disk_percent,
        disk_used_bytes = excluded.disk_used_bytes,
        load_1m = excluded.load_1m,
        interval_seconds = excluded.interval_seconds
    where (latest.collected_at, latest.cpu_percent, latest.memory_percent, latest.memory_used_bytes,
           latest.disk_percent, latest.disk_used_bytes, latest.load_1m, latest.interval_seconds)
          is distinct from
          (excluded.collected_at, excluded.cpu_percent, excluded.memory_percent, excluded.memory_used_bytes,
           excluded.disk_percent, excluded.disk_used_bytes, excluded.load_1m, excluded.interval_seconds);
end
$f$
$create$, metrics.server_last_point_select(true, 'where servers.id = any(server_ids)'));
revoke execute on function metrics.server_latest_refresh(bigint[]) from public;

create or replace function metrics.server_latest_after_truncate() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $f$
begin
    delete from metrics.server_latest;
    return null;
end
$f$;

execute format($trigger$drop trigger if exists server_latest_insert on %1$s$trigger$, metrics.raw_table());
execute format($trigger$create trigger server_latest_insert after insert on %1$s
    referencing new table as inserted_rows
    for each statement execute function metrics.server_latest_after_insert()$trigger$, metrics.raw_table());
-- 0011's statement trigger that re-derived every server (read-path-changes.sql now)
execute format($trigger$drop trigger if exists server_latest_change on %1$s$trigger$, metrics.raw_table());
execute format($trigger$drop trigger if exists server_latest_truncate on %1$s$trigger$, metrics.raw_table());
drop function if exists metrics.server_latest_rederive();
execute format($trigger$create trigger server_latest_truncate after truncate on %1$s
    for each statement execute function metrics.server_latest_after_truncate()$trigger$, metrics.raw_table());

create or replace view metrics.server_last_point as
select
    stored.server_id,
    stored.collected_at as last_metrics_at,
    stored.cpu_percent,
    stored.memory_percent,
    stored.memory_used_bytes,
    stored.disk_percent,
    stored.disk_used_bytes,
    stored.load_1m,
    stored.interval_seconds
from metrics.server_latest as stored;
end
$guard$;
