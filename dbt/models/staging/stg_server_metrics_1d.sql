with

source as (
    select * from {{ source('metrics', 'server_metrics_1d') }}
),

renamed as (
    select
        bucket as day_start_at,
        (bucket at time zone 'UTC')::date as metrics_date,
        server_id,
        sample_count,
        cpu_avg_percent,
        cpu_min_percent,
        cpu_max_percent,
        cpu_p50_percent,
        cpu_p95_percent,
        cpu_p99_percent,
        memory_used_avg_bytes,
        memory_used_min_bytes,
        memory_used_max_bytes,
        memory_used_p50_bytes,
        memory_used_p95_bytes,
        memory_used_p99_bytes,
        memory_avg_percent,
        memory_max_percent,
        disk_used_avg_bytes,
        disk_used_min_bytes,
        disk_used_max_bytes,
        disk_used_p50_bytes,
        disk_used_p95_bytes,
        disk_used_p99_bytes,
        disk_avg_percent,
        disk_max_percent,
        network_rx_avg_bytes_per_sec,
        network_rx_min_bytes_per_sec,
        network_rx_max_bytes_per_sec,
        network_rx_p50_bytes_per_sec,
        network_rx_p95_bytes_per_sec,
        network_rx_p99_bytes_per_sec,
        network_tx_avg_bytes_per_sec,
        network_tx_min_bytes_per_sec,
        network_tx_max_bytes_per_sec,
        network_tx_p50_bytes_per_sec,
        network_tx_p95_bytes_per_sec,
        network_tx_p99_bytes_per_sec
    from source
)

select * from renamed
