-- organization-retention: the per-organization retention override as a
-- TimescaleDB user-defined action (registered with add_job by
-- metrics.configure_policies). The global retention policy drops whole raw
-- chunks at the raw tier; organizations whose
-- tenancy.organization_settings.metrics_retention is shorter lose their
-- servers' older raw rows here, row by row (chunks hold every organization).
-- config: {"raw_retention": "<global raw tier interval>"}.

create or replace procedure metrics.apply_organization_retention(job_id integer, config jsonb)
language plpgsql as $$
declare
    global_raw interval := coalesce((config ->> 'raw_retention')::interval, interval '100 years');
    org record;
    removed bigint;
begin
    for org in
        select s.organization_id, s.metrics_retention
        from tenancy.organization_settings as s
        where s.metrics_retention is not null
          and s.metrics_retention < global_raw
        order by s.organization_id
    loop
        delete from metrics.server_metrics as m
        using tenancy.servers as srv
        where m.server_id = srv.id
          and srv.organization_id = org.organization_id
          and m.collected_at < now() - org.metrics_retention;
        get diagnostics removed = row_count;

        delete from metrics.metric_samples as m
        using tenancy.servers as srv
        where m.server_id = srv.id
          and srv.organization_id = org.organization_id
          and m.collected_at < now() - org.metrics_retention;

        if removed > 0 then
            raise log 'organization retention: organization % lost % server_metrics rows older than %',
                org.organization_id, removed, org.metrics_retention;
        end if;
    end loop;
end;
$$;
