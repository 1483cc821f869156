{#- Seconds between two samples of one server: rmp/catalog.py COLLECTION_INTERVAL_SECONDS,
    passed in by the dbt runner (rmp dbt) as RMP_DBT_COLLECTION_INTERVAL_SECONDS. -#}
{% macro collection_interval_seconds() -%}
    {{ return(env_var('RMP_DBT_COLLECTION_INTERVAL_SECONDS') | int) }}
{%- endmacro %}
