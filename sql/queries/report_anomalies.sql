-- report_anomalies: the :top highest-scoring anomalies of the seasonal
-- detector (stl_mad) that started since :'since', with server and organization names.
-- psql: psql -v since='2026-01-01 00:00+00' -v top=10 -f sql/queries/report_anomalies.sql
select
    anomalies.id,
    anomalies.server_id,
    servers.name as server,
    organizations.name as organization,
    anomalies.metric,
    anomalies.detector,
    anomalies.started_at,
    anomalies.ended_at,
    anomalies.observed,
    anomalies.expected,
    anomalies.score,
    anomalies.direction,
    coalesce(anomalies.resolution, '1h') as resolution
from analytics.anomalies as anomalies
inner join tenancy.servers as servers
    on servers.id = anomalies.server_id
inner join tenancy.organizations as organizations
    on organizations.id = servers.organization_id
where anomalies.started_at >= :'since'
    and anomalies.detector = 'stl_mad'
order by anomalies.score desc, anomalies.started_at
limit :top;
