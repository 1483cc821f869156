{#- The import CTEs at the top of a model, one per relation it reads:
        {{ import_ctes(servers='stg_servers', daily_metrics='stg_server_metrics_1d') }},
    renders
        servers as (select * from {{ ref('stg_servers') }}),
        daily_metrics as (select * from {{ ref('stg_server_metrics_1d') }})
    so a model still names every relation it reads at its top, under the
    name its steps use (the jaffle-shop convention), in one line per relation
    instead of three. The caller writes the comma before its next CTE. -#}
{% macro import_ctes() -%}
    {%- for cte_name, model_name in kwargs.items() %}
{{ cte_name }} as (select * from {{ ref(model_name) }}){{ ',' if not loop.last }}
    {%- endfor %}
{%- endmacro %}
