with

source as (
    select * from {{ source('tenancy', 'servers') }}
),

renamed as (
    select
        id as server_id,
        organization_id,
        name as server_name,
        hostname,
        cpu_cores,
        memory_total_bytes,
        disk_total_bytes,
        status as server_status,
        created_at
    from source
)

select * from renamed
