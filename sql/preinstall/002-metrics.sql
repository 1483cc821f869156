-- 002-metrics: the raw time-series hypertables (1-day chunks), the metric
-- type catalog and the quarantine table for rejected input rows.
-- Value ranges are CHECK constraints so a bad row fails with the name of the
-- column in the error (server_metrics_cpu_percent_range ...). Compression
-- settings live here with the tables (segment by server, newest first); the
-- policies that use them are in sql/idempotent/policies.sql.

-- Wide row: one per server per 30 s. Disk/network byte columns are deltas
-- since the previous sample of the same server.
create table metrics.server_metrics (
    server_id               bigint not null references tenancy.servers (id) on delete cascade,
    collected_at            timestamptz not null,
    cpu_percent             double precision
        constraint server_metrics_cpu_percent_range check (cpu_percent between 0 and 100),
    load_1m                 double precision constraint server_metrics_load_1m_nonnegative check (load_1m >= 0),
    load_5m                 double precision constraint server_metrics_load_5m_nonnegative check (load_5m >= 0),
    load_15m                double precision constraint server_metrics_load_15m_nonnegative check (load_15m >= 0),
    cpu_cores               integer constraint server_metrics_cpu_cores_nonnegative check (cpu_cores >= 0),
    memory_total_bytes      bigint constraint server_metrics_memory_total_bytes_nonnegative check (memory_total_bytes >= 0),
    memory_used_bytes       bigint constraint server_metrics_memory_used_bytes_nonnegative check (memory_used_bytes >= 0),
    memory_available_bytes  bigint constraint server_metrics_memory_available_bytes_nonnegative check (memory_available_bytes >= 0),
    memory_percent          double precision
        constraint server_metrics_memory_percent_range check (memory_percent between 0 and 100),
    disk_total_bytes        bigint constraint server_metrics_disk_total_bytes_nonnegative check (disk_total_bytes >= 0),
    disk_used_bytes         bigint constraint server_metrics_disk_used_bytes_nonnegative check (disk_used_bytes >= 0),
    disk_available_bytes    bigint constraint server_metrics_disk_available_bytes_nonnegative check (disk_available_bytes >= 0),
    disk_percent            double precision
        constraint server_metrics_disk_percent_range check (disk_percent between 0 and 100),
    disk_read_bytes         bigint constraint server_metrics_disk_read_bytes_nonnegative check (disk_read_bytes >= 0),
    disk_write_bytes        bigint constraint server_metrics_disk_write_bytes_nonnegative check (disk_write_bytes >= 0),
    network_rx_bytes        bigint constraint server_metrics_network_rx_bytes_nonnegative check (network_rx_bytes >= 0),
    network_tx_bytes        bigint constraint server_metrics_network_tx_bytes_nonnegative check (network_tx_bytes >= 0),
    containers_running      integer constraint server_metrics_containers_running_nonnegative check (containers_running >= 0),
    containers_total        integer constraint server_metrics_containers_total_nonnegative check (containers_total >= 0)
);
select create_hypertable('metrics.server_metrics', by_range('collected_at', interval '1 day'),
                         create_default_indexes => false);
-- Re-sent samples are de-duplicated on this key (insert ... on conflict);
-- it is also the index of the main query: one server, newest first.
create unique index server_metrics_server_time_uidx on metrics.server_metrics (server_id, collected_at desc);
create index server_metrics_time_idx on metrics.server_metrics (collected_at desc);
alter table metrics.server_metrics set (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'server_id',
    timescaledb.compress_orderby = 'collected_at desc'
);

create table metrics.metric_types (
    id           bigint generated always as identity primary key,
    name         text not null unique,
    unit         text not null,
    description  text,
    kind         text not null default 'gauge' check (kind in ('gauge', 'counter'))
);
-- The catalog rows are in sql/idempotent/metric-types.sql (re-applied, so adding a type is one line).

-- Narrow row: anything that is not a column of server_metrics (GPU, database
-- engine counters, ...). labels tells apart several series of one type (gpu: "0").
create table metrics.metric_samples (
    server_id       bigint not null references tenancy.servers (id) on delete cascade,
    metric_type_id  bigint not null references metrics.metric_types (id),
    collected_at    timestamptz not null,
    value           double precision not null,
    labels          jsonb not null default '{}'::jsonb
);
select create_hypertable('metrics.metric_samples', by_range('collected_at', interval '1 day'),
                         create_default_indexes => false);
create unique index metric_samples_server_type_time_uidx
    on metrics.metric_samples (server_id, metric_type_id, collected_at desc);
create index metric_samples_time_idx on metrics.metric_samples (collected_at desc);
alter table metrics.metric_samples set (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'server_id, metric_type_id',
    timescaledb.compress_orderby = 'collected_at desc'
);

create table metrics.site_usage (
    site_id           bigint not null references tenancy.sites (id) on delete cascade,
    collected_at      timestamptz not null,
    memory_used_mb    double precision constraint site_usage_memory_used_mb_nonnegative check (memory_used_mb >= 0),
    cpu_percent       double precision constraint site_usage_cpu_percent_range check (cpu_percent between 0 and 100),
    disk_used_mb      double precision constraint site_usage_disk_used_mb_nonnegative check (disk_used_mb >= 0),
    bandwidth_mb      double precision constraint site_usage_bandwidth_mb_nonnegative check (bandwidth_mb >= 0),
    requests          bigint constraint site_usage_requests_nonnegative check (requests >= 0),
    active_requests   integer constraint site_usage_active_requests_nonnegative check (active_requests >= 0),
    response_time_ms  double precision constraint site_usage_response_time_ms_nonnegative check (response_time_ms >= 0),
    is_up             boolean not null default true
);
select create_hypertable('metrics.site_usage', by_range('collected_at', interval '1 day'),
                         create_default_indexes => false);
create unique index site_usage_site_time_uidx on metrics.site_usage (site_id, collected_at desc);
create index site_usage_time_idx on metrics.site_usage (collected_at desc);
alter table metrics.site_usage set (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'site_id',
    timescaledb.compress_orderby = 'collected_at desc'
);

-- Event hypertable; duration = completed_at - executed_at.
create table metrics.scaling_events (
    id              bigint generated always as identity,
    server_id       bigint not null references tenancy.servers (id) on delete cascade,
    event_type      text not null check (event_type in
                        ('scale_up', 'scale_down', 'auto_scale_triggered', 'manual_scale', 'scale_cancelled')),
    trigger_reason  text,
    before_state    jsonb,
    after_state     jsonb,
    success         boolean,
    error_details   text,
    cost_impact     numeric(12, 2),
    executed_at     timestamptz not null,
    completed_at    timestamptz,
    primary key (id, executed_at),
    constraint scaling_events_completed_after_executed check (completed_at >= executed_at)
);
select create_hypertable('metrics.scaling_events', by_range('executed_at', interval '7 days'),
                         create_default_indexes => false);
create index scaling_events_server_time_idx on metrics.scaling_events (server_id, executed_at desc);

-- Quarantine: input rows the loader rejected, with where they came from and why.
create table metrics.rejected_rows (
    id            bigint generated always as identity primary key,
    rejected_at   timestamptz not null default now(),
    source_file   text,
    line_number   bigint,
    field         text,
    reason        text not null,
    raw_line      text,
    target_table  text
);
create index rejected_rows_source_idx on metrics.rejected_rows (source_file, line_number);
