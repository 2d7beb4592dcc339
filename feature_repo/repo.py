"""Module-level objects for the Feast CLI (`feast -c feature_repo apply`).

recloop itself applies `build_feature_objects` from Dagster; this file exists so
the stock Feast tooling works on the same definitions.
"""

import os
from pathlib import Path

from feature_repo.definitions import build_feature_objects

(
    user,
    item,
    user_features_source,
    item_features_source,
    user_stream_source,
    user_stream_push,
    user_features,
    item_features,
    user_stream,
    retrieval_v1,
    retrieval_v2,
    recommendation_list,
    batch_lists_source,
    batch_lists_push,
    batch_lists,
) = build_feature_objects(Path(os.environ["RECLOOP_DATA_DIR"]) / "marts")
