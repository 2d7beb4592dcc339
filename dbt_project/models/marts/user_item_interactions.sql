-- Training labels: one row per rating, click or purchase, stamped when it happened.
select
    event_id,
    tenant_id,
    user_id,
    item_id,
    event_type,
    event_value,
    cast(
        event_type in ('click', 'purchase')
        or (event_type = 'rating' and event_value >= {{ var('positive_rating_threshold') }})
        as integer
    ) as label,
    model_version,
    event_timestamp
from {{ ref('stg_events') }}
where event_type in ('rating', 'click', 'purchase')
