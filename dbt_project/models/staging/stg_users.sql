-- Rename and cast only. Grain: one row per user per catalog snapshot.
select
    cast(tenant_id as varchar) as tenant_id,
    cast(user_id as varchar) as user_id,
    cast(age as integer) as age,
    cast(gender as varchar) as gender,
    cast(occupation as varchar) as occupation,
    cast(zip_code as varchar) as zip_code,
    cast(snapshot_date as date) as snapshot_date
from {{ source('recloop', 'validated_users') }}
