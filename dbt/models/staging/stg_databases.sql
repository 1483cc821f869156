with

source as (
    select * from {{ source('tenancy', 'databases') }}
),

renamed as (
    select
        id as database_id,
        organization_id,
        server_id,
        name as database_name,
        engine as database_engine,
        created_at
    from source
)

select * from renamed
