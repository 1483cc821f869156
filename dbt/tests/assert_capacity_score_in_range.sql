-- The capacity score is 0..100 and ranks are handed only to active servers
-- with a score. Returns violations.
select *
from {{ ref('server_capacity') }}
where capacity_score < 0
    or capacity_score > 100
    or (capacity_rank_in_organization is not null and (server_status <> 'active' or capacity_score is null))
