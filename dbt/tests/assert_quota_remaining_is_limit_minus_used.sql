-- remaining = limit - used for every limited quota; an unlimited quota has
-- neither remaining nor percent and is never exceeded. Returns violations.
select *
from {{ ref('org_quota_status') }}
where (
        not is_unlimited
        and remaining_value is distinct from limit_value - used_value
    )
    or (
        is_unlimited
        and (remaining_value is not null or percent_used is not null or is_exceeded or is_at_limit)
    )
