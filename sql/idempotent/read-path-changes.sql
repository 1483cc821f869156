-- read-path-changes: DELETE and UPDATE of metrics.server_metrics under the fleet
-- read path (revision 0011): metrics.organization_cpu_hourly and
-- metrics.server_latest follow them once per statement.
--
-- The triggers are on the hypertable that holds server_metrics' rows: metrics.raw_table(),
-- metrics.server_samples from revision 0012 on (server_metrics is then a view over it),
-- and read its columns through metrics.raw_column() (rmp/migrations.py publish_raw_layout).
--
-- TimescaleDB refuses DELETE and UPDATE transition tables on a hypertable with
-- compression, so the changed rows are only seen by row triggers. Each changed
-- row of the last two days (and each row an UPDATE moves to another server) is
-- appended to the session's change log, pg_temp.rmp_read_path_changes: its
-- server, time and cpu_percent, with sign -1 for the old row and +1 for the new
-- one. No upsert per row: 0011's row trigger upserted the organization's hourly
-- row once per changed row, so one statement stacked versions of the same few
-- rows (288,000 recent rows deleted in 46.8 s, docs/scaling.md). After the
-- statement, one statement trigger consumes the whole log (row triggers of a
-- statement all fire before its statement triggers, so the log holds exactly
-- what this transaction changed and no statement end has applied yet):
--   * the sums per (organization, hour) of the window go into
--     metrics.organization_cpu_hourly with one ordered upsert
--     (metrics.organization_cpu_hourly_add);
--   * the last point of the servers in the log, and of the servers whose stored
--     last point is older than the window (a change of rows that old fires no row
--     trigger), is re-derived from the raw rows (metrics.server_latest_refresh);
--     not every server's, as 0011 did per statement.
-- Why a temporary table: private to the session (no two transactions see each
-- other's log, nothing to key, lock or index), rolled back with the transaction
-- or savepoint that wrote it, and emptied at commit (ON COMMIT DELETE ROWS),
-- so it never needs VACUUM (the embedded engine has no autovacuum). It is
-- created on first use in a session, by metrics.read_path_changes_create (its
-- owner, the migration role), and the row triggers write it with the rights of
-- whoever changes the rows: the security-definer function that reads it checks
-- first that it is that table, not one a user created under the same name.
-- Rows an FK cascade deletes from chunks (a server deleted: its sums already
-- moved out, sql/idempotent/organization-cpu-hourly.sql) fire the row trigger but
-- no statement trigger of the hypertable; their log rows name a server that no
-- longer exists, and are dropped at the next statement end or at commit.
-- Until revision 0011 has created the tables this file does nothing.

do $guard$
begin
if to_regclass('metrics.organization_cpu_hourly') is null or to_regclass('metrics.server_latest') is null then
    return;
end if;

-- security definer: the table is the migration role's, so only the statement trigger
-- below (and the owner) may read or empty it; whoever changes rows may append.
create or replace function metrics.read_path_changes_create() returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $f$
begin
    if to_regclass('pg_temp.rmp_read_path_changes') is null then
        create temporary table rmp_read_path_changes (
            server_id       bigint not null,
            collected_at    timestamptz not null,
            cpu_percent     double precision,
            sign            smallint not null
        ) on commit delete rows;
        grant insert on pg_temp.rmp_read_path_changes to public;
    end if;
end
$f$;

-- Per changed row: one or two appends, nothing else (no search_path set, no security
-- definer: each costs a few microseconds a row). Runs as whoever changes the rows.
execute format($create$
create or replace function metrics.read_path_log_change() returns trigger
language plpgsql as $f$
begin
    if pg_catalog.to_regclass('pg_temp.rmp_read_path_changes') is null then
        perform metrics.read_path_changes_create();
    end if;
    if tg_op = 'DELETE' then
        insert into pg_temp.rmp_read_path_changes values (old.server_id, old.collected_at, %1$s, -1);
    else
        insert into pg_temp.rmp_read_path_changes values
            (old.server_id, old.collected_at, %1$s, -1),
            (new.server_id, new.collected_at, %2$s, 1);
    end if;
    return null;
end
$f$
$create$, metrics.raw_column('cpu_percent', 'old'), metrics.raw_column('cpu_percent', 'new'));

-- After each DELETE / UPDATE statement: the log applied and emptied.
create or replace function metrics.read_path_apply_changes() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $f$
declare
    log_table oid := to_regclass('pg_temp.rmp_read_path_changes');
    -- once, not per row scanned (server_latest is scanned whole: one row per server)
    window_start timestamptz := now() - interval '2 days';
    changed_servers bigint[];
    organization_ids bigint[];
    hours timestamptz[];
    sums numeric[];
    counts bigint[];
begin
    if log_table is not null then
        -- a table of that name someone else created (after DISCARD TEMP) could run their
        -- code as this function's owner: only the one read_path_changes_create made is read
        if not exists (select from pg_class as c
                       where c.oid = log_table and c.relkind = 'r' and c.relowner = current_user::regrole
                         and not c.relhastriggers and not c.relhasrules) then
            raise exception 'pg_temp.rmp_read_path_changes was not created by the fleet read path'
                using hint = 'drop that temporary table (or end the session) and repeat the statement';
        end if;
        with consumed as (
            delete from pg_temp.rmp_read_path_changes
            returning server_id, collected_at, cpu_percent, sign
        ),
        per_hour as (
            select
                servers.organization_id,
                public.time_bucket(interval '1 hour', consumed.collected_at) as hour,
                coalesce(sum(consumed.sign * consumed.cpu_percent::numeric), 0) as s,
                sum(consumed.sign * (consumed.cpu_percent is not null)::int) as n
            from consumed
            join tenancy.servers as servers on servers.id = consumed.server_id
            where consumed.collected_at >= window_start
            group by 1, 2
        )
        select (select array_agg(distinct consumed.server_id) from consumed),
               array_agg(per_hour.organization_id), array_agg(per_hour.hour),
               array_agg(per_hour.s), array_agg(per_hour.n)
        into changed_servers, organization_ids, hours, sums, counts
        from per_hour;
        perform metrics.organization_cpu_hourly_add(organization_ids, hours, sums, counts);
    end if;
    perform metrics.server_latest_refresh(array(
        select unnest(changed_servers)
        union
        select latest.server_id from metrics.server_latest as latest
        where latest.collected_at < window_start));
    return null;
end
$f$;

-- WHEN: older rows (what retention deletes) cost only this test. An UPDATE is logged
-- when either side is in the window, or when it moves the row to another server.
execute format($trigger$drop trigger if exists read_path_log_delete on %1$s$trigger$, metrics.raw_table());
execute format($trigger$create trigger read_path_log_delete after delete on %1$s
    for each row when (old.collected_at >= now() - interval '2 days')
    execute function metrics.read_path_log_change()$trigger$, metrics.raw_table());
execute format($trigger$drop trigger if exists read_path_log_update on %1$s$trigger$, metrics.raw_table());
execute format($trigger$create trigger read_path_log_update after update on %1$s
    for each row when (old.collected_at >= now() - interval '2 days' or new.collected_at >= now() - interval '2 days'
                       or new.server_id <> old.server_id)
    execute function metrics.read_path_log_change()$trigger$, metrics.raw_table());
execute format($trigger$drop trigger if exists read_path_apply on %1$s$trigger$, metrics.raw_table());
execute format($trigger$create trigger read_path_apply after update or delete on %1$s
    for each statement execute function metrics.read_path_apply_changes()$trigger$, metrics.raw_table());
end
$guard$;
