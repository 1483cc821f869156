{#- The reference "now" of every mart: the `as_of` var when given (tests pin
    it), else current_timestamp evaluated when the view is queried. -#}
{% macro as_of() -%}
    {%- set pinned = var('as_of', none) -%}
    {%- if pinned is none -%}
        current_timestamp
    {%- else -%}
        {{ "'" ~ (pinned | string | replace("'", "''")) ~ "'" }}::timestamptz
    {%- endif -%}
{%- endmacro %}
