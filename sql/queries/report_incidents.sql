-- report_incidents: anomaly incidents of :'detector' that started since :'since',
-- grouped per server: the :top servers with the highest incident score, each
-- with all its incidents in the window (start, end, peak value, expected value
-- at the peak, score, resolution), newest server rank first.
-- psql: psql -v detector=stl_esd -v since='2026-01-01 00:00+00' -v top=10 -f sql/queries/report_incidents.sql
with

incidents as (
    select
        anomalies.*,
        coalesce(anomalies.resolution, '1h') as found_at_resolution
    from analytics.anomalies as anomalies
    where anomalies.started_at >= :'since'
        and anomalies.detector = :'detector'
),

ranked_servers as (
    select
        incidents.server_id,
        max(incidents.score) as max_score,
        count(*) as count_incidents
    from incidents
    group by 1
    order by max(incidents.score) desc, 1
    limit :top
)

select
    incidents.id,
    incidents.server_id,
    servers.name as server,
    organizations.name as organization,
    ranked_servers.max_score as server_max_score,
    ranked_servers.count_incidents as server_count_incidents,
    incidents.metric,
    incidents.detector,
    incidents.started_at,
    coalesce(incidents.ended_at, incidents.started_at) as ended_at,
    incidents.observed,
    incidents.expected,
    incidents.score,
    incidents.direction,
    incidents.found_at_resolution as resolution
from incidents
inner join ranked_servers
    on ranked_servers.server_id = incidents.server_id
inner join tenancy.servers as servers
    on servers.id = incidents.server_id
inner join tenancy.organizations as organizations
    on organizations.id = servers.organization_id
order by ranked_servers.max_score desc, servers.name, incidents.started_at;
