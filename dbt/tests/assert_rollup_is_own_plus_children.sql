-- Every organization's subtree total equals its own figure plus the subtree
-- totals of its direct children: checks the recursive rollup one level at a
-- time, independently of how it walked the tree. Returns violations, one row
-- per organization with a <measure>_match column for each measure.
{%- set measures = [
    'count_servers',
    'count_applications',
    'count_databases',
    'cpu_cores',
    'memory_total_bytes',
    'memory_used_bytes',
    'disk_total_bytes',
    'disk_used_bytes',
] %}

with

{{ import_ctes(rollup='org_usage_rollup') }},

children_totals as (
    select
        parent_organization_id as organization_id,
        count(*) + sum(count_descendant_organizations) as count_descendant_organizations,
        {%- for measure in measures %}
        sum(total_{{ measure }}) as total_{{ measure }}{{ ',' if not loop.last }}
        {%- endfor %}
    from rollup
    where parent_organization_id is not null
    group by 1
),

compared as (
    select
        rollup.organization_id,
        rollup.count_descendant_organizations
            = coalesce(children_totals.count_descendant_organizations, 0) as descendants_match,
        {%- for measure in measures %}
        rollup.total_{{ measure }}
            = rollup.own_{{ measure }} + coalesce(children_totals.total_{{ measure }}, 0)
            as {{ measure }}_match{{ ',' if not loop.last }}
        {%- endfor %}
    from rollup
    left join children_totals
        on children_totals.organization_id = rollup.organization_id
)

select *
from compared
where not (
    descendants_match
    {%- for measure in measures %}
    and {{ measure }}_match
    {%- endfor %}
)
