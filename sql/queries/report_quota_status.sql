-- report_quota_status: the :top most used limited quotas (marts.org_quota_status), by organization name.
-- psql: psql -v top=10 -f sql/queries/report_quota_status.sql
select
    organizations.name as organization,
    quota_status.quota_name,
    quota_status.unit,
    quota_status.limit_value,
    quota_status.used_value,
    quota_status.percent_used,
    quota_status.is_exceeded
from marts.org_quota_status as quota_status
inner join tenancy.organizations as organizations
    on organizations.id = quota_status.organization_id
where not quota_status.is_unlimited
order by quota_status.percent_used desc nulls last, organizations.name, quota_status.quota_name
limit :top;
