{% macro daily_activity(entity_key) %}
{#- Per entity and UTC day: the counts and sums that windowed features add up. -#}
select
    tenant_id,
    {{ entity_key }},
    cast(event_timestamp as date) as activity_date,
    count(*) filter (where event_type = 'rating') as ratings,
    coalesce(sum(event_value) filter (where event_type = 'rating'), 0) as rating_sum,
    count(*) filter (where event_type = 'click') as clicks,
    count(*) filter (where event_type = 'impression') as impressions,
    max(event_timestamp) as last_event_at
from {{ ref('stg_events') }}
group by tenant_id, {{ entity_key }}, cast(event_timestamp as date)
{% endmacro %}
