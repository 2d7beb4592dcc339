-- Per item and UTC day: counts and sums that the windowed item features add up.
{{ daily_activity('item_id') }}
