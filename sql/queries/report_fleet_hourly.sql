-- report_fleet_hourly: the fleet's hourly cpu, memory and disk (mean over
-- servers of each server's hourly average) since :'since', for the report's chart.
-- psql: psql -v since='2026-01-01 00:00+00' -f sql/queries/report_fleet_hourly.sql
select
    bucket,
    avg(cpu_avg_percent) as cpu,
    avg(memory_avg_percent) as memory,
    avg(disk_avg_percent) as disk
from metrics.server_metrics_1h
where bucket >= :'since'
group by bucket
order by bucket;
