-- Rename and cast only. Grain: one row per item per catalog snapshot.
select
    cast(tenant_id as varchar) as tenant_id,
    cast(item_id as varchar) as item_id,
    cast(title as varchar) as title,
    cast(release_year as integer) as release_year,
    cast(genres as varchar) as genres,
    cast(snapshot_date as date) as snapshot_date
from {{ source('recloop', 'validated_items') }}
