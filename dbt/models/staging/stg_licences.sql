with

source as (
    select * from {{ source('tenancy', 'licences') }}
),

renamed as (
    select
        organization_id,
        max_servers,
        max_applications,
        max_databases,
        max_deployments_per_month,
        max_cpu_cores,
        max_memory_bytes,
        max_disk_bytes,
        billing_period_start,
        billing_period_end,
        updated_at as licence_updated_at
    from source
)

select * from renamed
