-- 010-scaling-events: scaling events as the optimizer recorded them, end to end.
--   * organization_id: every event belongs to an organization; events of a
--     server take their server's (trigger below), organization-level events
--     (a plan change, no server) name it directly, so server_id is optional.
--   * outcome: succeeded, failed or cancelled (success alone cannot say
--     cancelled); rows written before this revision get it from success and
--     event_type. Duration is completed_at - executed_at.
--   * a natural key (organization, server, type, executed_at; nulls not
--     distinct) so that `rmp ingest` of the same events twice adds nothing.

alter table metrics.scaling_events alter column server_id drop not null;
alter table metrics.scaling_events
    add column organization_id bigint references tenancy.organizations (id) on delete cascade;
alter table metrics.scaling_events add column outcome text;

update metrics.scaling_events e set organization_id = s.organization_id
from tenancy.servers s where s.id = e.server_id;
update metrics.scaling_events set outcome = case
    when event_type = 'scale_cancelled' then 'cancelled'
    when success then 'succeeded'
    when not success then 'failed'
end;

alter table metrics.scaling_events alter column organization_id set not null;
alter table metrics.scaling_events add constraint scaling_events_outcome_check
    check (outcome in ('succeeded', 'failed', 'cancelled'));

create unique index scaling_events_natural_key
    on metrics.scaling_events (organization_id, server_id, event_type, executed_at) nulls not distinct;
create index scaling_events_organization_time_idx on metrics.scaling_events (organization_id, executed_at desc);

-- A server's event belongs to the server's organization, whatever the input
-- said. Security definer: the loader's role (rmp_ingest) reads no tenancy table.
create or replace function metrics.scaling_event_organization() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if new.server_id is not null then
        select s.organization_id into new.organization_id from tenancy.servers s where s.id = new.server_id;
    end if;
    return new;
end
$$;

create trigger scaling_events_organization
    before insert or update of server_id, organization_id on metrics.scaling_events
    for each row execute function metrics.scaling_event_organization();
