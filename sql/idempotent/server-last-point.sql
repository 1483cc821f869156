-- server-last-point: the latest sample of every server (its "current" state),
-- one row per server that has reported. Reads the (server_id, collected_at desc)
-- index once per server instead of scanning the hypertable. interval_seconds
-- (from revision 0010_interval_true_rates on) is the interval that server
-- samples at, so staleness is judged against it (marts.server_current).

do $guard$
declare
    has_interval boolean := exists (
        select from pg_attribute
        where attrelid = 'metrics.server_metrics'::regclass and attname = 'interval_seconds' and not attisdropped);
begin
execute format($view$
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
$view$,
    case when has_interval then E',\n    last_point.interval_seconds' else '' end,
    case when has_interval then E',\n        server_metrics.interval_seconds' else '' end);
end
$guard$;
