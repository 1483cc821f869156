{#- The recursive CTE `subtree_pairs`: every (ancestor_id, descendant_id)
    pair of the organization hierarchy at any depth, an organization being
    its own ancestor at distance 0. Reads a CTE named `organizations`
    (stg_organizations) and goes in a `with recursive` list. The depth bound
    (64 levels, as the hierarchy trigger allows) stops a corrupt parent cycle
    from looping forever. -#}
{% macro org_subtree_pairs() -%}
subtree_pairs as (
    select
        organization_id as ancestor_id,
        organization_id as descendant_id,
        0 as distance
    from organizations

    union all

    select
        subtree_pairs.ancestor_id,
        organizations.organization_id as descendant_id,
        subtree_pairs.distance + 1 as distance
    from subtree_pairs
    inner join organizations
        on organizations.parent_organization_id = subtree_pairs.descendant_id
    where subtree_pairs.distance < 64
)
{%- endmacro %}
