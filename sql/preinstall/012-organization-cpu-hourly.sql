-- 012-organization-cpu-hourly: CPU samples per organization and hour, for the
-- organization totals of the fleet dashboards (sql/queries/organization_totals.sql).
-- Their "CPU average of the last 24 hours" read the hourly tier: 24 rows per
-- server (240,000 at 10,000 servers) plus its not-yet-materialized tail from
-- the raw rows (972 ms p95 at 10,000 servers, bench/results/
-- scale-native-10000x1h.json). Here it is 24 rows per organization.
-- Kept by the triggers of sql/idempotent/organization-cpu-hourly.sql and
-- read-path-changes.sql for samples of the last two days (older ones can
-- never be in the window): inserts add, deletes subtract, updates do both
-- (once per statement), a truncate empties it, a server moved to another
-- organization takes its samples along. The sum is
-- numeric so that adding and subtracting leaves no rounding residue.
-- Created and filled from the raw rows by revision 0011.

create table metrics.organization_cpu_hourly (
    organization_id     bigint not null references tenancy.organizations (id) on delete cascade,
    hour                timestamptz not null,
    cpu_percent_sum     numeric not null,
    cpu_sample_count    bigint not null,
    primary key (organization_id, hour)
);

comment on table metrics.organization_cpu_hourly is
    'Sum and count of cpu_percent per organization and hour over the last two days, maintained by statement triggers on metrics.server_metrics.';
