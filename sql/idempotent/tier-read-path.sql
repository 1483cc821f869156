-- tier-read-path: the dashboard read path, one window -> tier mapping for every reader
-- (runs after tenant-security.sql: it reads through the tenant views).
--   tenant.aggregate_tiers: the catalog's tiers of metrics.server_metrics
--     (metrics.aggregate_tiers, published from rmp/catalog.py by every migration).
--   tenant.tier_for_window(span): the tier that serves a time range that long:
--     the finest whose serves_window_up_to covers it (the same rule as
--     rmp.catalog.tier_for_window in Python).
--   tenant.server_buckets(since, until, server_ids): that tier's rows of those
--     servers with since <= bucket <= until, read through tenant.<tier>, so a
--     login sees only its organizations' servers (every tier has the same
--     columns: they are rendered from sql/templates/server-metrics-aggregate.sql).
-- Grafana's fleet panels and sql/queries/server_window.sql read through it.
-- Until revision 0003 has created the tenant views this file does nothing.

do $guard$
declare
    finest text := (select t.view_name from metrics.aggregate_tiers as t order by t.bucket_width limit 1);
begin
if to_regclass(format('tenant.%I', finest)) is null then
    return;
end if;

create or replace view tenant.aggregate_tiers as
select * from metrics.aggregate_tiers;
grant select on tenant.aggregate_tiers to rmp_analyst, rmp_admin;

create or replace function tenant.tier_for_window(span interval) returns text
language sql stable as $f$
    select t.view_name
    from tenant.aggregate_tiers as t
    where t.serves_window_up_to is null or span <= t.serves_window_up_to
    order by t.bucket_width
    limit 1
$f$;

execute format($create$
    create or replace function tenant.server_buckets(since timestamptz, until timestamptz, server_ids bigint[])
    returns setof tenant.%I
    language plpgsql stable as $body$
    begin
        return query execute format(
            'select * from tenant.%%I where bucket between $1 and $2 and server_id = any($3)',
            tenant.tier_for_window(until - since))
        using since, until, server_ids;
    end
    $body$
$create$, finest);
end
$guard$;
