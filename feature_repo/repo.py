"""Module-level objects for the Feast CLI (`feast -c feature_repo apply`).

recloop itself applies `build_feature_objects` from Dagster; this file exists so
the stock Feast tooling works on the same definitions. The CLI needs
RECLOOP_DATA_DIR set: feature_store.yaml uses it too, and the CLI changes into this
directory before importing this file, so the default `./data` would point here.
"""

from feature_repo.definitions import build_feature_objects
from recloop.settings import DATA_DIR_ENV, Settings

(
    tenant,
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
) = build_feature_objects(Settings.from_env(required=(DATA_DIR_ENV,)).data_dir / "marts")
