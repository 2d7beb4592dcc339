-- Point-in-time item features for Feast (see the activity_features macro for the time semantics).
with catalog_entry as (
    select tenant_id, item_id, min(snapshot_date) as first_day
    from {{ ref('stg_items') }}
    group by tenant_id, item_id
),
activity as (
    {{ activity_features(ref('int_item_daily_activity'), 'item_id', 'catalog_entry') }}
)
select
    activity.*,
    items.release_year,
    cast(year(activity.feature_date) - items.release_year as double) as years_since_release,
    coalesce(items.genres, '') as genres
from activity
left join {{ ref('int_items') }} as items
    on items.tenant_id = activity.tenant_id and items.item_id = activity.item_id
