with

source as (
    select * from {{ source('tenancy', 'organizations') }}
),

renamed as (
    select
        id as organization_id,
        name as organization_name,
        slug as organization_slug,
        parent_id as parent_organization_id,
        created_at
    from source
)

select * from renamed
