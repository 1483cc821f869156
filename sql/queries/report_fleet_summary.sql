-- report_fleet_summary: the capacity report's fleet line: organizations,
-- servers, how many reported in the day before :'as_of', and the fleet's
-- current cpu, memory and disk from each server's latest sample.
-- psql: psql -v as_of='2026-01-01 00:00+00' -f sql/queries/report_fleet_summary.sql
select
    (select count(*) from tenancy.organizations) as organizations,
    (select count(*) from tenancy.servers) as servers,
    (select count(*) from tenancy.servers where status = 'active') as active_servers,
    (
        select count(*) from metrics.server_last_point
        where last_metrics_at >= :'as_of'::timestamptz - interval '1 day'
    ) as servers_reporting,
    (select avg(cpu_percent) from metrics.server_last_point) as cpu_avg_percent,
    (select avg(memory_percent) from metrics.server_last_point) as memory_avg_percent,
    (select avg(disk_percent) from metrics.server_last_point) as disk_avg_percent,
    (select max(disk_percent) from metrics.server_last_point) as disk_max_percent;
