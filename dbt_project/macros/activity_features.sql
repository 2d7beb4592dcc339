{% macro activity_windows() %}{{ return([7, 30, 90]) }}{% endmacro %}

{% macro activity_features(daily_relation, entity_key, entry_relation=none) %}
{#-
  Point-in-time activity features, one row per entity per UTC day from the
  entity's first activity to the tenant's last day with data.

  The row for `feature_date` D sums events of days up to and including D and
  is stamped `event_timestamp` = D + 1 day 00:00 UTC, the first moment all of
  D's events are known. A label at time t therefore joins features built only
  from events strictly before the start of t's day, never from t's own events.

  `entry_relation` (tenant_id, <entity_key>, first_day) starts the spine of
  entities that exist before their first event, e.g. catalog items never rated.
-#}
with daily as (
    select * from {{ daily_relation }}
),
first_seen as (
    select tenant_id, {{ entity_key }}, min(first_day) as first_day
    from (
        select tenant_id, {{ entity_key }}, activity_date as first_day from daily
        {%- if entry_relation is not none %}
        union all
        select tenant_id, {{ entity_key }}, first_day from {{ entry_relation }}
        {%- endif %}
    )
    group by tenant_id, {{ entity_key }}
),
spine as (
    select
        first_seen.tenant_id,
        first_seen.{{ entity_key }},
        cast(unnest(generate_series(first_seen.first_day, calendar.last_day, interval 1 day)) as date)
            as feature_date
    from first_seen
    inner join {{ ref('int_tenant_calendar') }} as calendar using (tenant_id)
),
filled as (
    select
        spine.tenant_id,
        spine.{{ entity_key }},
        spine.feature_date,
        coalesce(daily.ratings, 0) as ratings,
        coalesce(daily.rating_sum, 0) as rating_sum,
        coalesce(daily.clicks, 0) as clicks,
        coalesce(daily.impressions, 0) as impressions,
        daily.last_event_at
    from spine
    left join daily
        on daily.tenant_id = spine.tenant_id
        and daily.{{ entity_key }} = spine.{{ entity_key }}
        and daily.activity_date = spine.feature_date
)
select
    tenant_id,
    {{ entity_key }},
    feature_date,
    cast(feature_date + interval 1 day as timestamptz) as event_timestamp,
    {%- for days in activity_windows() %}
    {%- for measure, column in [('ratings', 'rating_count'), ('clicks', 'click_count'), ('impressions', 'impression_count')] %}
    cast(sum({{ measure }}) over (
        partition by tenant_id, {{ entity_key }} order by feature_date
        range between interval {{ days - 1 }} days preceding and current row
    ) as bigint) as {{ column }}_{{ days }}d,
    {%- endfor %}
    {%- endfor %}
    cast(sum(ratings) over cumulative as bigint) as rating_count_total,
    sum(rating_sum) over cumulative / nullif(sum(ratings) over cumulative, 0) as mean_rating,
    date_diff('second', max(last_event_at) over cumulative, cast(feature_date + interval 1 day as timestamptz))
        / 86400.0 as days_since_last_event
from filled
window cumulative as (
    partition by tenant_id, {{ entity_key }} order by feature_date
    rows between unbounded preceding and current row
)
{% endmacro %}
