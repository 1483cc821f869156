with

source as (
    select * from {{ source('metrics', 'server_metrics') }}
),

renamed as (
    select
        server_id,
        collected_at,
        cpu_percent,
        load_1m,
        load_5m,
        load_15m,
        cpu_cores,
        memory_total_bytes,
        memory_used_bytes,
        memory_available_bytes,
        memory_percent,
        disk_total_bytes,
        disk_used_bytes,
        disk_available_bytes,
        disk_percent,
        disk_read_bytes,
        disk_write_bytes,
        network_rx_bytes,
        network_tx_bytes,
        containers_running,
        containers_total,
        interval_seconds
    from source
)

select * from renamed
