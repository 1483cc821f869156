-- timescaledb-catalog-orphans: removes the rows TimescaleDB leaves in its own
-- catalog that would make a pg_dump of this database fail to restore.
--
-- TimescaleDB 2.23 keeps a continuous aggregate's pending materialization ranges
-- (_timescaledb_catalog.continuous_aggs_materialization_ranges: what a refresh
-- has claimed but not yet materialized) after the aggregate is dropped: its drop
-- deletes from every other per-aggregate catalog table, not this one, and the
-- table's foreign key (on delete cascade) is never checked because TimescaleDB
-- writes its catalog below the executor. pg_restore then loads the table into the
-- extension's own definition, key included, and fails on the first such row
-- (timescale/timescaledb#10184 shows the same rows). Revision 0010 drops and
-- recreates every aggregate (rmp/aggregate_rebuild.py), so any database whose
-- refresh policies ran before it holds them.
--
-- The rows name aggregates that no longer exist: no refresh can be working on
-- them, and nothing reads them. Runs with every migration and every
-- `rmp migrate upgrade` at head; `rmp doctor` ("dump restorable") checks every
-- foreign key of the extension's tables, this one included.

do $orphans$
declare
    removed bigint;
begin
if to_regclass('_timescaledb_catalog.continuous_aggs_materialization_ranges') is null then
    return;     -- a TimescaleDB without the table
end if;
if not has_table_privilege('_timescaledb_catalog.continuous_aggs_materialization_ranges', 'delete') then
    if exists (select from _timescaledb_catalog.continuous_aggs_materialization_ranges as ranges
               where not exists (select from _timescaledb_catalog.continuous_agg as aggregates
                                 where aggregates.mat_hypertable_id = ranges.materialization_id)) then
        raise warning 'TimescaleDB''s catalog holds materialization ranges of dropped continuous aggregates: '
                      'a pg_dump of this database will not restore, and role % may not remove them', current_user
            using hint = 'run `rmp migrate upgrade` as the owner of the timescaledb extension';
    end if;
    return;
end if;
delete from _timescaledb_catalog.continuous_aggs_materialization_ranges as ranges
where not exists (select from _timescaledb_catalog.continuous_agg as aggregates
                  where aggregates.mat_hypertable_id = ranges.materialization_id);
get diagnostics removed = row_count;
if removed > 0 then
    raise notice 'removed % materialization range(s) of dropped continuous aggregates from TimescaleDB''s catalog',
        removed;
end if;
end
$orphans$;
