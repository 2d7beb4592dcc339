"""Streaming user features recomputed in batch: the offline truth of Feast's `user_stream`.

The rows come from recloop.features.stream_features.stream_feature_history: a row as of every
engagement time, so Feast's point-in-time join gives a training label the features
the service had pushed by then. The service's StreamState computes each user's
latest row with the same function, so batch and stream share one definition (see
that module for the semantics). Written as Parquet like every mart.
"""

import pyarrow as pa

from recloop.features.stream_features import EVENT_COLUMNS, stream_feature_history

SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("user_id", pa.string()),
        ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ("engagements_1h", pa.int64()),
        ("last_items", pa.list_(pa.string())),
    ]
)


def model(dbt, session):
    # dbt makes a Python model a table unless the model itself says otherwise.
    dbt.config(materialized="external")
    events = dbt.ref("stg_events").select(", ".join(EVENT_COLUMNS)).df()
    return pa.Table.from_pandas(stream_feature_history(events), schema=SCHEMA, preserve_index=False)
