-- Rename and cast only. Grain: one row per valid raw event.
select
    cast(event_id as varchar) as event_id,
    cast(tenant_id as varchar) as tenant_id,
    cast(user_id as varchar) as user_id,
    cast(item_id as varchar) as item_id,
    cast(event_type as varchar) as event_type,
    cast(value as double) as event_value,
    cast(event_timestamp as timestamptz) as event_timestamp,
    cast(request_id as varchar) as request_id,
    cast(model_version as varchar) as model_version,
    cast(variant as varchar) as variant,
    cast(position as integer) as position,
    cast(propensity as double) as propensity
from {{ source('recloop', 'validated_events') }}
