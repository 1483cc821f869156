with

source as (
    select * from {{ source('tenancy', 'deployments') }}
),

renamed as (
    select
        id as deployment_id,
        organization_id,
        site_id,
        application_id,
        status as deployment_status,
        build_seconds,
        deployed_at,
        created_at
    from source
)

select * from renamed
