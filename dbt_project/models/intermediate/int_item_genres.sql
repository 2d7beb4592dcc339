-- Item-to-genre bridge over the latest item snapshot. Grain: (tenant_id, item_id, genre).
select distinct tenant_id, item_id, unnest(genre_list) as genre
from {{ ref('int_items') }}
