-- 001-tenancy: who owns what. Organizations (with sub-organizations of any
-- depth, no cycles), users and memberships, servers, sites with resource
-- limits, applications, databases, deployments, licences (quotas) and
-- per-organization settings such as the metrics retention override.
-- Deleting an organization deletes everything it owns; deleting a server
-- deletes its metrics (foreign keys on the metrics hypertables, 002).

create table tenancy.organizations (
    id          bigint generated always as identity primary key,
    name        text not null unique,
    slug        text not null unique check (slug ~ '^[a-z0-9][a-z0-9-]*$'),
    parent_id   bigint references tenancy.organizations (id) on delete cascade,
    created_at  timestamptz not null default now(),
    constraint organizations_not_own_parent check (parent_id is distinct from id)
);
create index organizations_parent_idx on tenancy.organizations (parent_id);

-- A parent chain must end: reject an insert/update whose new parent is the
-- organization itself or one of its descendants.
create or replace function tenancy.reject_organization_cycle() returns trigger
language plpgsql as $$
begin
    if new.parent_id is null then
        return new;
    end if;
    if exists (
        with recursive ancestors(id, parent_id) as (
            select o.id, o.parent_id from tenancy.organizations o where o.id = new.parent_id
            union
            select o.id, o.parent_id
            from tenancy.organizations o
            join ancestors a on o.id = a.parent_id
        )
        select 1 from ancestors where id = new.id
    ) then
        raise exception 'organization % cannot have parent %: that would make a cycle', new.id, new.parent_id
            using errcode = 'check_violation';
    end if;
    return new;
end;
$$;

create trigger organizations_no_cycle
    before insert or update of parent_id on tenancy.organizations
    for each row execute function tenancy.reject_organization_cycle();

create table tenancy.users (
    id          bigint generated always as identity primary key,
    email       text not null unique,
    full_name   text,
    created_at  timestamptz not null default now()
);

create table tenancy.memberships (
    user_id          bigint not null references tenancy.users (id) on delete cascade,
    organization_id  bigint not null references tenancy.organizations (id) on delete cascade,
    role             text not null default 'member' check (role in ('owner', 'admin', 'member')),
    created_at       timestamptz not null default now(),
    primary key (user_id, organization_id)
);
create index memberships_organization_idx on tenancy.memberships (organization_id);

create table tenancy.servers (
    id                  bigint generated always as identity primary key,
    organization_id     bigint not null references tenancy.organizations (id) on delete cascade,
    name                text not null,
    hostname            text,
    cpu_cores           integer check (cpu_cores > 0),
    memory_total_bytes  bigint check (memory_total_bytes >= 0),
    disk_total_bytes    bigint check (disk_total_bytes >= 0),
    status              text not null default 'active'
                        check (status in ('active', 'maintenance', 'decommissioned')),
    created_at          timestamptz not null default now(),
    unique (organization_id, name)
);

create table tenancy.sites (
    id                       bigint generated always as identity primary key,
    organization_id          bigint references tenancy.organizations (id) on delete cascade,
    user_id                  bigint references tenancy.users (id) on delete cascade,
    server_id                bigint references tenancy.servers (id) on delete set null,
    name                     text not null,
    max_memory_mb            integer check (max_memory_mb >= 0),
    max_cpu_percent          double precision check (max_cpu_percent between 0 and 100),
    max_disk_mb              integer check (max_disk_mb >= 0),
    max_bandwidth_mb         integer check (max_bandwidth_mb >= 0),
    max_requests_per_minute  integer check (max_requests_per_minute >= 0),
    created_at               timestamptz not null default now(),
    constraint sites_one_owner check (num_nonnulls(organization_id, user_id) = 1)
);
create index sites_organization_idx on tenancy.sites (organization_id);
create index sites_server_idx on tenancy.sites (server_id);

create table tenancy.applications (
    id               bigint generated always as identity primary key,
    organization_id  bigint not null references tenancy.organizations (id) on delete cascade,
    server_id        bigint references tenancy.servers (id) on delete set null,
    name             text not null,
    created_at       timestamptz not null default now()
);
create index applications_organization_idx on tenancy.applications (organization_id);

create table tenancy.databases (
    id               bigint generated always as identity primary key,
    organization_id  bigint not null references tenancy.organizations (id) on delete cascade,
    server_id        bigint references tenancy.servers (id) on delete set null,
    name             text not null,
    engine           text,
    created_at       timestamptz not null default now()
);
create index databases_organization_idx on tenancy.databases (organization_id);

create table tenancy.deployments (
    id               bigint generated always as identity primary key,
    organization_id  bigint not null references tenancy.organizations (id) on delete cascade,
    site_id          bigint references tenancy.sites (id) on delete cascade,
    application_id   bigint references tenancy.applications (id) on delete cascade,
    status           text not null default 'pending'
                     check (status in ('pending', 'building', 'success', 'failed')),
    build_seconds    double precision check (build_seconds >= 0),
    deployed_at      timestamptz,
    created_at       timestamptz not null default now(),
    constraint deployments_one_target check (num_nonnulls(site_id, application_id) = 1)
);
create index deployments_organization_created_idx on tenancy.deployments (organization_id, created_at desc);

-- Quotas; a null limit means unlimited.
create table tenancy.licences (
    organization_id            bigint primary key references tenancy.organizations (id) on delete cascade,
    max_servers                integer check (max_servers >= 0),
    max_applications           integer check (max_applications >= 0),
    max_databases              integer check (max_databases >= 0),
    max_deployments_per_month  integer check (max_deployments_per_month >= 0),
    max_cpu_cores              integer check (max_cpu_cores >= 0),
    max_memory_bytes           bigint check (max_memory_bytes >= 0),
    max_disk_bytes             bigint check (max_disk_bytes >= 0),
    billing_period_start       date,
    billing_period_end         date,
    updated_at                 timestamptz not null default now(),
    constraint licences_billing_period_order check (billing_period_end >= billing_period_start)
);

-- metrics_retention null = the global raw tier (rmp/settings.py RETENTION['raw']).
-- Applied by the metrics.apply_organization_retention job (sql/idempotent).
create table tenancy.organization_settings (
    organization_id    bigint primary key references tenancy.organizations (id) on delete cascade,
    metrics_retention  interval check (metrics_retention > interval '0'),
    updated_at         timestamptz not null default now()
);
