-- cagg-copy-invalidations: logs the continuous-aggregate invalidations of rows
-- COPY writes into metrics.server_metrics, which TimescaleDB 2.23 itself stops
-- logging once any trigger with a transition table is on the hypertable (those
-- of sql/idempotent/server-last-point.sql and organization-cpu-hourly.sql):
-- such a trigger makes its COPY take the row-by-row path (TS_CIM_SINGLE in
-- src/copy.c), which never calls the invalidation hook the buffered path calls,
-- so a late or re-loaded row older than an aggregate's materialization would
-- never reach it. INSERT statements are logged by TimescaleDB as before; this
-- trigger cannot tell COPY from INSERT, and logging a range twice only makes a
-- refresh look at it once more.
--
-- The triggers are on the hypertable that holds server_metrics' rows: metrics.raw_table(),
-- metrics.server_samples from revision 0012 on (server_metrics is then a view over it),
-- and read its columns through metrics.raw_column() (rmp/migrations.py publish_raw_layout).
--
-- What it logs is what TimescaleDB would: the inserted rows' [lowest, greatest]
-- time, only when it starts below the hypertable's invalidation threshold (rows
-- above it are materialized by the next refresh anyway), for every continuous
-- aggregate on the hypertable, through TimescaleDB's own procedure
-- _timescaledb_functions.add_materialization_invalidations (it aligns the range to
-- each aggregate's buckets). tests/test_cagg_invalidations.py proves it on both
-- engines. Until revision 0011 has created the transition-table triggers this
-- file does nothing. The function is the migration owner's (security definer):
-- that role must be allowed to write TimescaleDB's catalog (a superuser here).

do $guard$
begin
if to_regclass('metrics.server_latest') is null then
    return;
end if;
-- A TimescaleDB without the procedure (older than the 2.23 here) logs through its row trigger
-- ts_cagg_invalidation_trigger, which sees every COPY: nothing to work around there.
if to_regprocedure('_timescaledb_functions.add_materialization_invalidations(regclass, tstzrange)') is null then
    execute format('drop trigger if exists cagg_copy_invalidations on %s', metrics.raw_table());
    return;
end if;
-- The function below runs as this role. Were it not allowed to write the log, every late
-- COPY would fail at load time; say so now, at migration time, instead.
if not has_table_privilege('_timescaledb_catalog.continuous_aggs_materialization_invalidation_log', 'insert') then
    raise exception 'role % may not write TimescaleDB''s invalidation log, which the fleet read path needs '
                    '(revision 0011: late rows loaded by COPY would never reach the aggregates)', current_user
        using hint = 'run the migrations as the owner of the timescaledb extension (a superuser on a self-hosted server)';
end if;

-- security definer: loaders write as rmp_ingest, which may not write TimescaleDB's catalog
create or replace function metrics.log_cagg_copy_invalidations() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $f$
declare
    lowest timestamptz;
    greatest timestamptz;
    threshold timestamptz;
    aggregate regclass;
begin
    select min(inserted.collected_at), max(inserted.collected_at) into lowest, greatest
    from inserted_rows as inserted;
    select _timescaledb_functions.to_timestamp(thresholds.watermark) into threshold
    from _timescaledb_catalog.continuous_aggs_invalidation_threshold as thresholds
    join _timescaledb_catalog.hypertable as hypertables on hypertables.id = thresholds.hypertable_id
    where hypertables.schema_name = tg_table_schema and hypertables.table_name = tg_table_name;
    -- no rows, or no refresh yet (no threshold), or all above it: nothing materialized is stale
    if lowest is null or threshold is null or lowest >= threshold then
        return null;
    end if;
    for aggregate in
        select format('%I.%I', aggregates.view_schema, aggregates.view_name)::regclass
        from timescaledb_information.continuous_aggregates as aggregates
        where aggregates.hypertable_schema = tg_table_schema and aggregates.hypertable_name = tg_table_name
        order by 1
    loop
        -- half-open, as the procedure expects: it aligns [lower, upper - 1 µs] to the buckets
        call _timescaledb_functions.add_materialization_invalidations(
            aggregate, tstzrange(lowest, greatest + interval '1 microsecond'));
    end loop;
    return null;
end
$f$;

execute format($trigger$drop trigger if exists cagg_copy_invalidations on %1$s$trigger$, metrics.raw_table());
execute format($trigger$create trigger cagg_copy_invalidations after insert on %1$s
    referencing new table as inserted_rows
    for each statement execute function metrics.log_cagg_copy_invalidations()$trigger$, metrics.raw_table());
end
$guard$;
