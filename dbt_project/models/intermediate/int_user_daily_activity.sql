-- Per user and UTC day: counts and sums that the windowed user features add up.
{{ daily_activity('user_id') }}
