-- policies: refresh, compression and retention policies and the
-- per-organization retention job, (re)set from the catalog (rmp/catalog.py
-- policies(), passed in by the migration as jsonb:
--   {"raw_retention": "90 days", "raw_compress_after": "1 day",
--    "raw_hypertables": ["server_metrics", ...],
--    "aggregates": [{"name": "server_metrics_1m", "retention": "30 days",
--                    "start_offset": "2 hours", "end_offset": "1 minute",
--                    "schedule": "1 minute", "compress_after": "1 day"}, ...]}
-- retention / compress_after null = keep forever / do not compress). Safe to
-- call again: every policy is replaced. An aggregate of the catalog that does
-- not exist yet (a later revision creates it) is skipped.
--
-- The invariant that keeps history: each aggregate's refresh window
-- (start_offset back from now) must lie inside its source's retention
-- horizon, or a refresh after a retention run would find the raw rows gone
-- and delete the aggregated buckets. All levels read the raw hypertable, so
-- every start_offset must be shorter than the raw tier; this function refuses
-- a catalog that breaks it, and `rmp doctor` audits it on a live database.
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

-- (dropped first: the parameter was once named differently, which "or replace" cannot change)
drop function if exists metrics.configure_policies(jsonb);
create function metrics.configure_policies(catalog jsonb) returns void
language plpgsql as $$
declare
    raw_retention interval := (catalog ->> 'raw_retention')::interval;
    raw_table text;
    agg record;
begin
    perform metrics.delete_policy_jobs();

    -- Raw hypertables: compression after a day, retention at the raw tier.
    for raw_table in select jsonb_array_elements_text(catalog -> 'raw_hypertables') loop
        perform remove_compression_policy(format('metrics.%I', raw_table)::regclass, if_exists => true);
        perform add_compression_policy(format('metrics.%I', raw_table)::regclass,
                                       compress_after => (catalog ->> 'raw_compress_after')::interval);
        perform remove_retention_policy(format('metrics.%I', raw_table)::regclass, if_exists => true);
        if raw_retention is not null then
            perform add_retention_policy(format('metrics.%I', raw_table)::regclass, drop_after => raw_retention);
        end if;
    end loop;

    for agg in
        select * from jsonb_to_recordset(catalog -> 'aggregates') as a(
            name text, retention interval, start_offset interval, end_offset interval,
            schedule interval, compress_after interval)
    loop
        continue when to_regclass(format('metrics.%I', agg.name)) is null;
        if raw_retention is not null and agg.start_offset >= raw_retention then
            raise exception 'refresh window of metrics.% (%) reaches past the raw retention of % ',
                agg.name, agg.start_offset, raw_retention
                using hint = 'lengthen RAW_RETENTION or shorten the refresh_start_offset in rmp/catalog.py';
        end if;
        perform remove_continuous_aggregate_policy(format('metrics.%I', agg.name)::regclass,
                                                   if_exists => true);
        perform add_continuous_aggregate_policy(format('metrics.%I', agg.name)::regclass,
            start_offset => agg.start_offset,
            end_offset => agg.end_offset,
            schedule_interval => agg.schedule);

        perform remove_compression_policy(format('metrics.%I', agg.name)::regclass, if_exists => true);
        if agg.compress_after is not null then
            perform add_compression_policy(format('metrics.%I', agg.name)::regclass,
                                           compress_after => agg.compress_after);
        end if;

        perform remove_retention_policy(format('metrics.%I', agg.name)::regclass, if_exists => true);
        if agg.retention is not null then
            perform add_retention_policy(format('metrics.%I', agg.name)::regclass,
                                         drop_after => agg.retention);
        end if;
    end loop;

    perform delete_job(j.job_id)
    from timescaledb_information.jobs as j
    where j.proc_schema = 'metrics' and j.proc_name = 'apply_organization_retention';
    perform add_job('metrics.apply_organization_retention', interval '1 hour',
                    config => jsonb_build_object('raw_retention', raw_retention));
end;
$$;
