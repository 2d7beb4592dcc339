-- The latest snapshot of each item, with genres as a list.
select
    tenant_id,
    item_id,
    title,
    release_year,
    genres,
    coalesce(string_split(genres, '|'), []) as genre_list,
    snapshot_date
from {{ ref('stg_items') }}
qualify row_number() over (partition by tenant_id, item_id order by snapshot_date desc) = 1
