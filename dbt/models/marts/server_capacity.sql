{#-
    capacity_score = 100 - (use of the tightest resource), clamped to 0..100.
    Use of a resource is its worst hourly p95, in percent, over the server's
    latest capacity_window_hours hours of data (ending at its last hour
    before as_of, looked for within capacity_lookback_days): cpu_p95_percent,
    memory_used_p95_bytes / memory_total_bytes, disk_used_p95_bytes /
    disk_total_bytes. The worst hour, not an average of p95s: percentiles do
    not average, and a deployment must fit the busy hour too. Anchoring the
    window at the server's own last hour keeps a score for a fleet whose
    data arrives late; server_current says how old it is.
-#}

with

{{ import_ctes(servers='stg_servers', hourly_metrics='stg_server_metrics_1h') }},

-- the lookback bound lets the aggregate's time index skip old history
hours_before_as_of as (
    select *
    from hourly_metrics
    where hour_start_at >= {{ as_of() }} - interval '{{ var("capacity_lookback_days") | int }} days'
        and hour_start_at < {{ as_of() }}
),

latest_hours as (
    select
        server_id,
        max(hour_start_at) as latest_hour_start_at
    from hours_before_as_of
    group by 1
),

recent_hours as (
    select
        hours_before_as_of.*,
        latest_hours.latest_hour_start_at
    from hours_before_as_of
    inner join latest_hours
        on latest_hours.server_id = hours_before_as_of.server_id
    where hours_before_as_of.hour_start_at
        > latest_hours.latest_hour_start_at - interval '{{ var("capacity_window_hours") | int }} hours'
),

recent_peaks as (
    select
        server_id,
        max(latest_hour_start_at) as latest_hour_start_at,
        count(*) as count_hours,
        sum(sample_count) as sample_count,
        max(cpu_p95_percent) as cpu_p95_percent,
        max(memory_used_p95_bytes) as memory_used_p95_bytes,
        max(disk_used_p95_bytes) as disk_used_p95_bytes
    from recent_hours
    group by 1
),

resource_use as (
    select
        servers.server_id,
        servers.organization_id,
        servers.server_name,
        servers.server_status,
        recent_peaks.latest_hour_start_at,
        coalesce(recent_peaks.count_hours, 0)::bigint as count_recent_hours,
        coalesce(recent_peaks.sample_count, 0)::bigint as recent_sample_count,
        recent_peaks.cpu_p95_percent::double precision as cpu_p95_percent,
        (100 * recent_peaks.memory_used_p95_bytes / nullif(servers.memory_total_bytes, 0))::double precision
            as memory_p95_percent,
        (100 * recent_peaks.disk_used_p95_bytes / nullif(servers.disk_total_bytes, 0))::double precision
            as disk_p95_percent
    from servers
    left join recent_peaks
        on recent_peaks.server_id = servers.server_id
),

-- greatest() skips nulls: a server without a total for one resource is
-- scored on the others
tightest as (
    select
        *,
        greatest(cpu_p95_percent, memory_p95_percent, disk_p95_percent) as tightest_p95_percent
    from resource_use
),

-- no recent data at all leaves the score null (least/greatest would turn
-- a null into 100)
scored as (
    select
        *,
        case
            when tightest_p95_percent is not null
                then round(greatest(0, least(100, 100 - tightest_p95_percent))::numeric, 2)::numeric(5, 2)
        end as capacity_score,
        case tightest_p95_percent
            when cpu_p95_percent then 'cpu'
            when memory_p95_percent then 'memory'
            when disk_p95_percent then 'disk'
        end as bottleneck_resource
    from tightest
),

-- the server to pick for the next deployment in an organization has rank 1;
-- only active servers with recent data are ranked
ranked as (
    select
        *,
        case
            when server_status = 'active' and capacity_score is not null
                then row_number() over (
                    partition by organization_id, server_status = 'active' and capacity_score is not null
                    order by capacity_score desc, server_id
                )
        end as capacity_rank_in_organization
    from scored
)

select * from ranked
