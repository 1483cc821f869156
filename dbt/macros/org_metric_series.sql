{#- An organization's metric series at one aggregate tier, read from that
    tier's continuous aggregate (never the raw hypertable):
      metrics_model     the staging model of the tier (stg_server_metrics_5m, _1h, _1d)
      time_column       its bucket column (bucket_start_at, hour_start_at, day_start_at)
      include_children  false: the organization's own servers;
                        true: its servers and those of all its sub-organizations
    cpu is averaged over the time the servers' samples cover (each server's
    bucket mean weighted by its sampled_seconds, not a mean of means, and a
    server sampled every 10 s counts no more than one sampled every 60 s)
    with its peak; memory, disk and network are the sum over servers of each
    server's figure for the bucket (network: bytes per second over the
    seconds each sample covers, true at any collection interval). is_complete: every server
    the organization runs (not decommissioned) reported in the bucket; a
    partial bucket's totals would look like a drop. A filter on
    organization_id and the time column reaches the aggregate (both are
    grouping keys), so one organization's range reads only its buckets. -#}
{% macro org_metric_series(metrics_model, time_column, include_children=false) %}
with recursive

servers as (
    select * from {{ ref('stg_servers') }}
),

bucket_metrics as (
    select * from {{ ref(metrics_model) }}
),

{% if include_children %}
organizations as (
    select * from {{ ref('stg_organizations') }}
),

{{ org_subtree_pairs() }},

server_owners as (
    select
        subtree_pairs.ancestor_id as organization_id,
        servers.server_id
    from subtree_pairs
    inner join servers
        on servers.organization_id = subtree_pairs.descendant_id
),
{% else %}
server_owners as (
    select
        servers.organization_id,
        servers.server_id
    from servers
),
{% endif %}

expected_servers as (
    select
        server_owners.organization_id,
        count(*) as count_servers_expected
    from server_owners
    inner join servers
        on servers.server_id = server_owners.server_id
    where servers.server_status <> 'decommissioned'
    group by 1
),

organization_buckets as (
    select
        server_owners.organization_id,
        bucket_metrics.{{ time_column }},
        count(*) as count_servers_reporting,
        sum(bucket_metrics.sample_count) as sample_count,
        sum(bucket_metrics.cpu_avg_percent * bucket_metrics.sampled_seconds)
            / nullif(sum(bucket_metrics.sampled_seconds), 0) as cpu_avg_percent,
        max(bucket_metrics.cpu_max_percent) as cpu_max_percent,
        sum(bucket_metrics.memory_used_avg_bytes) as memory_used_avg_bytes_total,
        sum(bucket_metrics.memory_used_max_bytes) as memory_used_max_bytes_total,
        sum(bucket_metrics.disk_used_avg_bytes) as disk_used_avg_bytes_total,
        sum(bucket_metrics.disk_used_max_bytes) as disk_used_max_bytes_total,
        sum(bucket_metrics.network_rx_avg_bytes_per_sec) as network_rx_avg_bytes_per_sec_total,
        sum(bucket_metrics.network_tx_avg_bytes_per_sec) as network_tx_avg_bytes_per_sec_total
    from bucket_metrics
    inner join server_owners
        on server_owners.server_id = bucket_metrics.server_id
    group by 1, 2
),

with_expected as (
    select
        organization_buckets.*,
        coalesce(expected_servers.count_servers_expected, 0) as count_servers_expected
    from organization_buckets
    left join expected_servers
        on expected_servers.organization_id = organization_buckets.organization_id
),

final as (
    select
        organization_id,
        {{ time_column }},
        count_servers_reporting::bigint as count_servers_reporting,
        count_servers_expected::bigint as count_servers_expected,
        count_servers_reporting = count_servers_expected as is_complete,
        sample_count::bigint as sample_count,
        cpu_avg_percent::double precision as cpu_avg_percent,
        cpu_max_percent::double precision as cpu_max_percent,
        memory_used_avg_bytes_total::double precision as memory_used_avg_bytes_total,
        memory_used_max_bytes_total::double precision as memory_used_max_bytes_total,
        disk_used_avg_bytes_total::double precision as disk_used_avg_bytes_total,
        disk_used_max_bytes_total::double precision as disk_used_max_bytes_total,
        network_rx_avg_bytes_per_sec_total::double precision as network_rx_avg_bytes_per_sec_total,
        network_tx_avg_bytes_per_sec_total::double precision as network_tx_avg_bytes_per_sec_total
    from with_expected
)

select * from final
{% endmacro %}
