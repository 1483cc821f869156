-- 011-server-latest: the latest sample of every server, kept as a table.
-- The fleet-wide dashboards (fleet last point, organization totals) read
-- one row per server; deriving it from the hypertable is one index probe per
-- server (489 ms p95 at 10,000 servers under live load, bench/results/
-- scale-native-10000x1h.json). Created by revision 0011. The triggers of
-- sql/idempotent/server-last-point.sql and read-path-changes.sql keep it equal
-- to the raw rows for every writer (rmp ingest, the collector, psql \copy,
-- plain SQL): inserts fold in the newest inserted row per server, deletes and
-- updates re-derive the servers they changed, truncates empty it. Filled from
-- the raw rows by revision 0011.
-- fillfactor 50: each server's row is updated every sample; room on the page
-- keeps those updates HOT (no index change, no bloat of the primary key).

create table metrics.server_latest (
    server_id           bigint primary key references tenancy.servers (id) on delete cascade,
    collected_at        timestamptz not null,
    cpu_percent         double precision,
    memory_percent      double precision,
    memory_used_bytes   bigint,
    disk_percent        double precision,
    disk_used_bytes     bigint,
    load_1m             double precision,
    interval_seconds    double precision    -- the sample's own interval (revision 0010's column)
) with (fillfactor = 50);

comment on table metrics.server_latest is
    'Latest sample of each server (metrics.server_metrics), maintained by statement triggers; read through metrics.server_last_point.';
