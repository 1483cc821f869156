-- 007-organization-hierarchy-lock: make the anti-cycle check on
-- tenancy.organizations safe under concurrency.
--
-- The check (reject a new parent that is the organization itself or one of
-- its descendants) reads the parent chain. Two transactions that each move
-- one organization under the other both read a chain without the other's
-- uncommitted change, both pass, and together make a cycle. So every change
-- that sets a parent first upserts the single row of
-- tenancy.organization_hierarchy_lock: the second writer waits for the first
-- to finish and then reads the chain afresh (READ COMMITTED takes a new
-- snapshot per statement), or, under REPEATABLE READ / SERIALIZABLE, fails
-- with a serialization error because the row changed after its snapshot —
-- never a cycle. Changes that only clear a parent or leave it alone take no
-- lock. A parent chain may be at most 64 organizations long (the depth
-- marts.org_usage_rollup and sql/queries/organization_totals.sql walk), so
-- the walk also ends on data written before this check.

create table tenancy.organization_hierarchy_lock (
    id          boolean primary key default true check (id),
    changes     bigint not null default 0,
    changed_at  timestamptz not null default now()
);

create or replace function tenancy.reject_organization_cycle() returns trigger
language plpgsql as $$
declare
    ancestor bigint := new.parent_id;
    depth integer := 0;
begin
    if new.parent_id is null
       or (tg_op = 'UPDATE' and new.parent_id is not distinct from old.parent_id) then
        return new;
    end if;
    insert into tenancy.organization_hierarchy_lock as l (id, changes) values (true, 1)
    on conflict (id) do update set changes = l.changes + 1, changed_at = now();
    while ancestor is not null loop
        if ancestor = new.id then
            raise exception 'organization % cannot have parent %: that would make a cycle', new.id, new.parent_id
                using errcode = 'check_violation';
        end if;
        depth := depth + 1;
        if depth >= 64 then
            raise exception 'organization % cannot have parent %: the parent chain would be 64 or more levels deep', new.id, new.parent_id
                using errcode = 'check_violation';
        end if;
        select o.parent_id into ancestor from tenancy.organizations o where o.id = ancestor;
    end loop;
    return new;
end;
$$;
