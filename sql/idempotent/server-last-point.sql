-- server-last-point: the latest sample of every server (its "current" state),
-- one row per server that has reported. Reads the (server_id, collected_at desc)
-- index once per server instead of scanning the hypertable.
--
-- From revision 0010 on it also shows the latest sample's interval_seconds, so
-- staleness is judged against each server's own sampling interval
-- (marts.server_current); the guard keeps the file valid for the revisions
-- before 0010, which apply it too.
--
-- No trigger-maintained "latest" table: statement triggers with transition
-- tables on metrics.server_metrics stop TimescaleDB 2.23 from logging COPY's
-- continuous-aggregate invalidations (late rows then never reach the
-- aggregates); see docs/scaling.md.

do $guard$
declare
    has_interval boolean := exists (
        select from pg_attribute
        where attrelid = 'metrics.server_metrics'::regclass and attname = 'interval_seconds' and not attisdropped);
begin
execute format($v$
create or replace view metrics.server_last_point as
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
$v$,
    case when has_interval then E',\n    last_point.interval_seconds' else '' end,
    case when has_interval then E',\n        server_metrics.interval_seconds' else '' end);
end
$guard$;
