{#- The staging model of one tier of metrics.server_metrics (the continuous
    aggregate `tier`): its bucket renamed to say what it starts (`bucket_as`;
    `date_as` adds the bucket's UTC date), the server, and the measure columns
    every tier has. The tiers differ only in those names, so each staging model
    is one call, as the organization series marts are (org_metric_series). -#}
{% macro stg_server_metrics_tier(tier, bucket_as, date_as=none) -%}
with

source as (
    select * from {{ source('metrics', tier) }}
),

renamed as (
    select
        bucket as {{ bucket_as }},
        {%- if date_as %}
        (bucket at time zone 'UTC')::date as {{ date_as }},
        {%- endif %}
        server_id,
        {{- server_metric_aggregate_columns() }}
    from source
)

select * from renamed
{%- endmacro %}
