with

source as (
    select * from {{ source('tenancy', 'applications') }}
),

renamed as (
    select
        id as application_id,
        organization_id,
        server_id,
        name as application_name,
        created_at
    from source
)

select * from renamed
