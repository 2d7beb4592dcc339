-- The last UTC day with data, per tenant: feature spines run up to it.
select tenant_id, min(cast(event_timestamp as date)) as first_day, max(cast(event_timestamp as date)) as last_day
from {{ ref('stg_events') }}
group by tenant_id
