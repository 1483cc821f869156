with

source as (
    select * from {{ source('tenancy', 'sites') }}
),

renamed as (
    select
        id as site_id,
        organization_id,
        user_id,
        server_id,
        name as site_name,
        max_memory_mb,
        max_cpu_percent,
        max_disk_mb,
        max_bandwidth_mb,
        max_requests_per_minute,
        created_at
    from source
)

select * from renamed
