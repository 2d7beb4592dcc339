-- Point-in-time user features for Feast (see the activity_features macro for the time semantics).
with activity as (
    {{ activity_features(ref('int_user_daily_activity'), 'user_id') }}
),
vocabulary as (
    select genre, genre_index from {{ ref('genres') }}
),
active_days as (
    select distinct tenant_id, user_id, activity_date from {{ ref('int_user_daily_activity') }}
),
cumulative_genres as (
    select
        active_days.tenant_id,
        active_days.user_id,
        active_days.activity_date,
        vocabulary.genre_index,
        sum(coalesce(genre_daily.interactions, 0)) over (
            partition by active_days.tenant_id, active_days.user_id, vocabulary.genre
            order by active_days.activity_date
            rows between unbounded preceding and current row
        ) as interactions
    from active_days
    cross join vocabulary
    left join {{ ref('int_user_genre_daily') }} as genre_daily
        on genre_daily.tenant_id = active_days.tenant_id
        and genre_daily.user_id = active_days.user_id
        and genre_daily.activity_date = active_days.activity_date
        and genre_daily.genre = vocabulary.genre
),
genre_counts as (
    select
        tenant_id,
        user_id,
        activity_date,
        list(cast(interactions as double) order by genre_index) as counts,
        sum(interactions) as total
    from cumulative_genres
    group by tenant_id, user_id, activity_date
),
genre_affinity as (
    select
        tenant_id,
        user_id,
        activity_date,
        list_transform(counts, lambda share: case when total > 0 then share / total else 0.0 end)
            as genre_affinity,
        case
            when total > 0
                then (select list(genre order by genre_index) from vocabulary)[list_position(counts, list_max(counts))]
        end as top_genre
    from genre_counts
)
select
    activity.*,
    coalesce(
        genre_affinity.genre_affinity,
        (select list(0.0::double order by genre_index) from vocabulary)
    ) as genre_affinity,
    genre_affinity.top_genre
from activity
asof left join genre_affinity
    on activity.tenant_id = genre_affinity.tenant_id
    and activity.user_id = genre_affinity.user_id
    and activity.feature_date >= genre_affinity.activity_date
