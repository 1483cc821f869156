-- percent_used lies in 0..100 unless the quota is exceeded, and is over 100
-- when it is. Returns violations.
select *
from {{ ref('org_quota_status') }}
where percent_used is not null
    and (
        (not is_exceeded and (percent_used < 0 or percent_used > 100))
        or (is_exceeded and percent_used <= 100)
    )
