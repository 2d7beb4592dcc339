-- Per user, UTC day and genre: how many ratings and clicks touched an item of that genre.
select
    events.tenant_id,
    events.user_id,
    cast(events.event_timestamp as date) as activity_date,
    item_genres.genre,
    count(*) as interactions
from {{ ref('stg_events') }} as events
inner join {{ ref('int_item_genres') }} as item_genres
    on events.tenant_id = item_genres.tenant_id and events.item_id = item_genres.item_id
where events.event_type in ('rating', 'click')
group by all
