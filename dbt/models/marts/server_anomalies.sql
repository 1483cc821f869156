{#-
    One row per stored anomaly (an incident: flagged points merged, analytics/anomaly.py)
    with its server and organization names. duration_minutes counts the
    incident's buckets: ended_at is the start of its last bucket, so a
    one-bucket anomaly at 1h lasts 60 minutes. is_primary_detector marks the
    detector the report leads with (stl_esd); baseline_rule is the seed's rule,
    kept for comparison.
-#}

with

{{ import_ctes(
    anomalies='stg_anomalies',
    servers='stg_servers',
    organizations='stg_organizations',
) }},

-- inner joins: a reader sees an anomaly only with a server and organization it may see
anomalies_named as (
    select
        anomalies.anomaly_id,
        servers.organization_id,
        organizations.organization_name,
        anomalies.server_id,
        servers.server_name,
        anomalies.metric,
        anomalies.detector,
        anomalies.detector = 'stl_esd' as is_primary_detector,
        anomalies.resolution,
        anomalies.started_at,
        coalesce(anomalies.ended_at, anomalies.started_at) as ended_at,
        anomalies.observed_value,
        anomalies.expected_value,
        anomalies.score,
        anomalies.direction
    from anomalies
    inner join servers
        on servers.server_id = anomalies.server_id
    inner join organizations
        on organizations.organization_id = servers.organization_id
),

with_duration as (
    select
        *,
        (extract(epoch from ended_at - started_at) / 60
            + case resolution
                when '1m' then 1
                when '5m' then 5
                when '1h' then 60
                when '1d' then 1440
            end)::integer as duration_minutes
    from anomalies_named
)

select * from with_duration
