-- policies: refresh, compression and retention policies and the
-- per-organization retention job, (re)set from the retention tiers that
-- rmp/settings.py RETENTION holds (passed in by the migration as jsonb:
-- {"raw": "90 days", "1m": "30 days", "5m": "90 days", "1h": "1 year", "1d": null};
-- null = keep forever). Safe to call again: every policy is replaced.
--
-- The invariant that keeps history: each aggregate's refresh window
-- (start_offset back from now) must lie inside its source's retention
-- horizon, or a refresh after a retention run would find the raw rows gone
-- and delete the aggregated buckets. All levels read the raw hypertable, so
-- every start_offset must be shorter than the raw tier; this function refuses
-- tiers that break it, and `rmp doctor` audits it on a live database.

--
-- Running jobs: on a real server TimescaleDB's background workers may be
-- refreshing or compressing while this runs. Deleting a job waits for (and
-- cancels) its worker, and that worker may be waiting for a lock on the same
-- relations; so every job of ours is deleted first, in job-id order, before
-- this transaction locks anything else — it cannot deadlock with a job.
-- rmp.migrations also pauses these jobs (and waits for running ones) before
-- any revision runs, so a revision's DDL never waits on a job either.

create or replace function metrics.policy_job_ids() returns setof integer
language sql stable as $$
    select j.job_id
    from timescaledb_information.jobs as j
    where j.hypertable_schema = 'metrics'
       or (j.hypertable_schema, j.hypertable_name) in (
            select c.materialization_hypertable_schema, c.materialization_hypertable_name
            from timescaledb_information.continuous_aggregates as c
            where c.view_schema = 'metrics')
       or (j.proc_schema = 'metrics' and j.proc_name = 'apply_organization_retention')
    order by j.job_id
$$;

create or replace function metrics.delete_policy_jobs() returns integer
language plpgsql as $$
declare
    job_id integer;
    n integer := 0;
begin
    for job_id in select metrics.policy_job_ids() loop
        perform delete_job(job_id);
        n := n + 1;
    end loop;
    return n;
end;
$$;

create or replace function metrics.configure_policies(tiers jsonb) returns void
language plpgsql as $$
declare
    raw_retention interval := (tiers ->> 'raw')::interval;
    -- level, bucket width, refresh start_offset, end_offset, schedule, compress_after
    level record;
begin
    perform metrics.delete_policy_jobs();

    -- Raw hypertables: compression after a day, retention at the raw tier.
    perform remove_compression_policy('metrics.server_metrics', if_exists => true);
    perform remove_compression_policy('metrics.metric_samples', if_exists => true);
    perform remove_compression_policy('metrics.site_usage', if_exists => true);
    perform add_compression_policy('metrics.server_metrics', compress_after => interval '1 day');
    perform add_compression_policy('metrics.metric_samples', compress_after => interval '1 day');
    perform add_compression_policy('metrics.site_usage', compress_after => interval '1 day');

    perform remove_retention_policy('metrics.server_metrics', if_exists => true);
    perform remove_retention_policy('metrics.metric_samples', if_exists => true);
    perform remove_retention_policy('metrics.site_usage', if_exists => true);
    if raw_retention is not null then
        perform add_retention_policy('metrics.server_metrics', drop_after => raw_retention);
        perform add_retention_policy('metrics.metric_samples', drop_after => raw_retention);
        perform add_retention_policy('metrics.site_usage', drop_after => raw_retention);
    end if;

    for level in
        select * from (values
            ('server_metrics_1m', '1m', interval '2 hours', interval '1 minute', interval '1 minute', interval '1 day'),
            ('server_metrics_5m', '5m', interval '6 hours', interval '5 minutes', interval '5 minutes', interval '1 day'),
            ('server_metrics_1h', '1h', interval '3 days', interval '1 hour', interval '1 hour', interval '7 days'),
            ('server_metrics_1d', '1d', interval '7 days', interval '1 day', interval '1 day', interval '30 days'),
            ('site_usage_daily', 'raw', interval '7 days', interval '1 day', interval '1 day', interval '30 days')
        ) as v(view_name, tier, start_offset, end_offset, schedule, compress_after)
    loop
        if raw_retention is not null and level.start_offset >= raw_retention then
            raise exception 'refresh window of metrics.% (%) reaches past the raw retention of % ',
                level.view_name, level.start_offset, raw_retention
                using hint = 'lengthen RETENTION[''raw''] in rmp/settings.py';
        end if;
        perform remove_continuous_aggregate_policy(format('metrics.%I', level.view_name)::regclass,
                                                   if_exists => true);
        perform add_continuous_aggregate_policy(format('metrics.%I', level.view_name)::regclass,
            start_offset => level.start_offset,
            end_offset => level.end_offset,
            schedule_interval => level.schedule);

        perform remove_compression_policy(format('metrics.%I', level.view_name)::regclass, if_exists => true);
        if level.view_name <> 'site_usage_daily' then
            perform add_compression_policy(format('metrics.%I', level.view_name)::regclass,
                                           compress_after => level.compress_after);
        end if;

        perform remove_retention_policy(format('metrics.%I', level.view_name)::regclass, if_exists => true);
        if level.tier <> 'raw' and tiers ->> level.tier is not null then
            perform add_retention_policy(format('metrics.%I', level.view_name)::regclass,
                                         drop_after => (tiers ->> level.tier)::interval);
        end if;
    end loop;

    perform delete_job(j.job_id)
    from timescaledb_information.jobs as j
    where j.proc_schema = 'metrics' and j.proc_name = 'apply_organization_retention';
    perform add_job('metrics.apply_organization_retention', interval '1 hour',
                    config => jsonb_build_object('raw_retention', raw_retention));
end;
$$;
