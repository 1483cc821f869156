-- server-buckets: the dashboard read path, one window -> tier mapping for every reader.
--   metrics.tier_for_window(span): the tier of metrics.server_metrics that serves
--     a time range that long: the finest whose serves_window_up_to covers it
--     (the catalog's mapping, published in metrics.aggregate_tiers; the same rule
--     as rmp.catalog.tier_for_window in Python).
--   metrics.server_buckets(since, until, server_ids): that tier's rows of those
--     servers with since <= bucket <= until (every tier has the same columns:
--     they are rendered from one definition, sql/templates/server-metrics-aggregate.sql).
-- Grafana's fleet panels and sql/queries/server_last_*.sql read through it.
-- Before revision 0002 has created the tiers, only tier_for_window exists.

create or replace function metrics.tier_for_window(span interval) returns text
language sql stable as $$
    select t.view_name
    from metrics.aggregate_tiers as t
    where t.serves_window_up_to is null or span <= t.serves_window_up_to
    order by t.bucket_width
    limit 1
$$;

do $guard$
declare
    finest text := (select t.view_name from metrics.aggregate_tiers as t order by t.bucket_width limit 1);
begin
if to_regclass(format('metrics.%I', finest)) is null then
    return;
end if;
execute format($create$
    create or replace function metrics.server_buckets(since timestamptz, until timestamptz, server_ids bigint[])
    returns setof metrics.%I
    language plpgsql stable as $body$
    begin
        return query execute format(
            'select * from metrics.%%I where bucket between $1 and $2 and server_id = any($3)',
            metrics.tier_for_window(until - since))
        using since, until, server_ids;
    end
    $body$
$create$, finest);
end
$guard$;
