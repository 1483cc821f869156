-- api: what the metrics HTTP API (api/, `rmp api serve`) calls in the database.
--   * tenancy.api_token_role(sha256): the role a live token stands for, or
--     null. Security definer so the API's login needs no privilege on
--     tenancy.api_tokens; callable by anyone because the argument is the hash
--     of a 256-bit random token (knowing it is knowing the token).
--   * tenant.aggregate_refreshes(): when each continuous aggregate was last
--     refreshed and is next due — the API's Last-Modified and
--     Cache-Control: max-age. Security definer: tenant roles cannot read the
--     job tables. Only finite times: TimescaleDB keeps next_start at
--     -infinity while the job runs (and its "not yet" times at -infinity),
--     which no client date type holds — the API answered 500 whenever a
--     request met a running refresh. Null = unknown (no-cache).
-- Until revision 0006 created tenancy.api_tokens this file does nothing.

do $guard$
begin
if to_regclass('tenancy.api_tokens') is null then
    return;
end if;

create or replace function tenancy.api_token_role(token_sha256 text) returns name
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $f$
    select t.role_name from tenancy.api_tokens t
    where t.token_sha256 = api_token_role.token_sha256 and t.revoked_at is null
$f$;

create or replace function tenant.aggregate_refreshes()
returns table (aggregate_name name, refreshed_at timestamptz, next_refresh_at timestamptz,
               refresh_interval interval)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $f$
    select j.hypertable_name::name,
           case when isfinite(s.last_successful_finish) then s.last_successful_finish end,
           case when isfinite(s.next_start) then s.next_start end,
           j.schedule_interval
    from timescaledb_information.jobs j
    left join timescaledb_information.job_stats s on s.job_id = j.job_id
    where j.proc_name = 'policy_refresh_continuous_aggregate' and j.hypertable_schema = 'metrics'
$f$;

revoke execute on function tenant.aggregate_refreshes() from public;
grant execute on function tenant.aggregate_refreshes() to rmp_analyst, rmp_admin;
end
$guard$;
