{#- The measure columns every server_metrics_<grain> aggregate has
    (docs/schema.md), one list for the staging models of all grains. -#}
{% macro server_metric_aggregate_columns() -%}
    {%- set stats = ['avg', 'min', 'max', 'p50', 'p95', 'p99'] -%}
    {%- set columns = ['sample_count'] -%}
    {%- for s in stats %}{% do columns.append('cpu_' ~ s ~ '_percent') %}{% endfor -%}
    {%- for s in stats %}{% do columns.append('memory_used_' ~ s ~ '_bytes') %}{% endfor -%}
    {%- do columns.extend(['memory_avg_percent', 'memory_max_percent']) -%}
    {%- for s in stats %}{% do columns.append('disk_used_' ~ s ~ '_bytes') %}{% endfor -%}
    {%- do columns.extend(['disk_avg_percent', 'disk_max_percent']) -%}
    {%- for s in stats %}{% do columns.append('network_rx_' ~ s ~ '_bytes_per_sec') %}{% endfor -%}
    {%- for s in stats %}{% do columns.append('network_tx_' ~ s ~ '_bytes_per_sec') %}{% endfor -%}
    {#- from revision 0010: the seconds the bucket's samples cover, and disk byte rates -#}
    {%- do columns.extend(['sampled_seconds', 'disk_read_avg_bytes_per_sec', 'disk_read_max_bytes_per_sec',
                           'disk_write_avg_bytes_per_sec', 'disk_write_max_bytes_per_sec']) -%}
    {%- for c in columns %}
        {{ c }}{{ ',' if not loop.last }}
    {%- endfor %}
{%- endmacro %}
