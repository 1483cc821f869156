-- 003-analytics: result tables the analytics package writes so analysts can
-- query forecasts, anomalies and report runs with SQL. One row per report run;
-- forecasts and anomalies are upserted on their natural keys so a re-run
-- replaces rather than duplicates.

create table analytics.report_runs (
    id           bigint generated always as identity primary key,
    kind         text not null,
    started_at   timestamptz not null default now(),
    finished_at  timestamptz,
    status       text not null,
    output_path  text,
    error        text,
    parameters   jsonb not null default '{}'::jsonb
);

create table analytics.forecasts (
    id                     bigint generated always as identity primary key,
    run_id                 bigint references analytics.report_runs (id) on delete set null,
    entity_type            text not null check (entity_type in ('server', 'organization')),
    entity_id              bigint not null,
    metric                 text not null,
    model                  text not null,
    horizon_start          timestamptz not null,
    forecast               jsonb not null default '[]'::jsonb,   -- [{at, yhat, lo, hi}]
    trend                  text check (trend in ('increasing', 'decreasing', 'stable')),
    slope_per_day          double precision,
    r_squared              double precision,
    threshold              double precision,
    threshold_crossing_at  timestamptz,
    crossing_lo_at         timestamptz,
    crossing_hi_at         timestamptz,
    mase                   double precision,
    status                 text not null default 'ok' check (status in ('ok', 'insufficient_data')),
    created_at             timestamptz not null default now(),
    unique (entity_type, entity_id, metric, horizon_start)
);

create table analytics.anomalies (
    id          bigint generated always as identity primary key,
    server_id   bigint not null references tenancy.servers (id) on delete cascade,
    metric      text not null,
    detector    text not null,
    started_at  timestamptz not null,
    ended_at    timestamptz,
    observed    double precision,
    expected    double precision,
    score       double precision,
    direction   text check (direction in ('up', 'down')),
    created_at  timestamptz not null default now(),
    unique (server_id, metric, detector, started_at)
);
