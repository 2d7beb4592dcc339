"""Open the Feast store for recloop's settings, and guard what Feast does not.

Feast's SQLite online store overwrites a row whatever its timestamp
(ARCHITECTURE.md, "Upstream gaps recloop guards against"): re-materializing an old window would replace newer values.
`install_monotonic_guard` adds a trigger per feature-view table that drops such
writes inside SQLite itself, so every writer (materialize, push) is covered.
Feast's Redis store already skips rows not newer than the stored one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path

import ibis
import pandas as pd
import redis
import yaml
from feast import FeatureStore, FeatureView
from feast.online_response import TIMESTAMP_POSTFIX
from feast.repo_config import RepoConfig

from feature_repo.definitions import FEATURE_TTL, TENANT_KEY
from recloop.features.feature_vectors import STREAM_VIEW, USER_COLUMNS, USER_VIEW, feature_refs
from recloop.features.materialization import mart_time_range, materialization_window
from recloop.features.parity import ParityReport, compare_parity, latest_offline_rows
from recloop.features.stream_features import WINDOW
from recloop.settings import Settings

REPO_DIR = Path(__file__).resolve().parent
# What the user tower reads online, and the ttl each view's point-in-time join applies.
USER_TOWER_REFS = [
    *feature_refs(USER_VIEW, [c for c in USER_COLUMNS if c != "top_genre"]),
    *feature_refs(STREAM_VIEW, ["last_items"]),
]
ONLINE_TTLS = {USER_VIEW: FEATURE_TTL, STREAM_VIEW: WINDOW}
CONFIG_FILES = {"sqlite": "feature_store.yaml", "redis": "feature_store.redis.yaml"}


def config_file(settings: Settings) -> Path:
    return REPO_DIR / CONFIG_FILES[settings.online_store]


def load_repo_config(settings: Settings) -> RepoConfig:
    """Read the YAML that `settings` selects, filling ${RECLOOP_*} from settings, not os.environ."""
    text = config_file(settings).read_text()
    for name, value in {
        "RECLOOP_DATA_DIR": str(settings.data_dir),
        "RECLOOP_REDIS_URL": settings.redis_url,
    }.items():
        text = text.replace("${" + name + "}", value)
    raw = yaml.safe_load(text)
    raw["project"] = settings.feast_project
    if settings.feast_registry_url:
        # The scale profile's shared registry (PostgreSQL), in place of the SQLite file.
        raw["registry"]["path"] = settings.feast_registry_url
    return RepoConfig(repo_path=REPO_DIR, **raw)


def open_feature_store(settings: Settings) -> FeatureStore:
    (settings.data_dir / "feast").mkdir(parents=True, exist_ok=True)
    disable_duckdb_file_cache()
    return FeatureStore(config=load_repo_config(settings))


def disable_duckdb_file_cache() -> None:
    """Make Feast's offline reads see a mart that dbt rewrote moments ago.

    Feast reads Parquet through ibis's process-wide DuckDB connection. DuckDB 1.5
    caches file contents and trusts the file's mtime to the second, so a mart
    rewritten within the same second is read from stale bytes (wrong rows, or
    "Out of buffer"); tests/integration/test_pit_oracle.py shows it.
    """
    ibis.get_backend().raw_sql("SET enable_external_file_cache = false")


def sqlite_table(store: FeatureStore, view: FeatureView) -> str:
    """Feast's SQLite table name for `view` (`<project>_<view>`)."""
    return f"{store.config.project}_{view.name}"


def install_monotonic_guard(store: FeatureStore, views: Sequence[FeatureView]) -> list[str]:
    """Make the SQLite online store ignore writes older than the stored row; returns triggers."""
    if store.config.online_store.type != "sqlite":
        return []

    # Feast 0.67 stores event_ts as epoch seconds; older files hold ISO text. Compare both as seconds.
    def seconds(column: str) -> str:
        return (
            f"(CASE typeof({column}) WHEN 'text' THEN CAST(strftime('%s', {column}) AS REAL) "
            f"ELSE {column} END)"
        )

    created = []
    with sqlite3.connect(store.config.online_store.path) as conn:
        for view in views:
            table = sqlite_table(store, view)
            trigger = f"{table}_keep_newest"
            conn.execute(
                f'CREATE TRIGGER IF NOT EXISTS "{trigger}" BEFORE UPDATE ON "{table}" '
                f"FOR EACH ROW WHEN {seconds('NEW.event_ts')} < {seconds('OLD.event_ts')} "
                "BEGIN SELECT RAISE(IGNORE); END"
            )
            created.append(trigger)
    return created


def count_online_entities(store: FeatureStore, view: FeatureView) -> int:
    """Entity rows that `view` has in the online store."""
    online = store.config.online_store
    if online.type == "sqlite":
        with sqlite3.connect(online.path) as conn:
            row = conn.execute(
                f'SELECT COUNT(DISTINCT entity_key) FROM "{sqlite_table(store, view)}"'
            ).fetchone()
        return int(row[0])
    if online.type == "redis":
        client = redis.Redis.from_url(redis_url_from_feast(online.connection_string))
        field = f"_ts:{view.name}".encode()
        keys = client.scan_iter(match=b"*" + store.config.project.encode(), count=1000)
        count = 0
        while batch := list(islice(keys, 1000)):
            with client.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.hexists(key, field)
                count += sum(pipe.execute())
        return count
    raise ValueError(f"cannot count rows in online store type {online.type!r}")


def redis_url_from_feast(connection_string: str) -> str:
    """Feast's 'host:port,db=N,password=X' string as a redis:// URL."""
    host_port, *options = connection_string.split(",")
    params = dict(option.split("=", 1) for option in options)
    auth = f":{params['password']}@" if "password" in params else ""
    scheme = "rediss" if params.get("ssl", "").lower() == "true" else "redis"
    return f"{scheme}://{auth}{host_port}/{params.get('db', '0')}"


# How long a health probe waits for the online store: a request must not wait longer.
PROBE_TIMEOUT_S = 0.5
# What the online store raises when it cannot be reached or read.
STORE_ERRORS = (redis.exceptions.RedisError, sqlite3.Error, OSError)


def online_store_problem(store: FeatureStore) -> str | None:
    """Why the online store cannot answer now (None when it can): Redis must answer a
    PING within PROBE_TIMEOUT_S; a SQLite store's file must exist and open."""
    online = store.config.online_store
    if online.type == "redis":
        url = redis_url_from_feast(online.connection_string)
        address = online.connection_string.split(",", 1)[0]
        client = redis.Redis.from_url(
            url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S
        )
        try:
            client.ping()
        except redis.exceptions.RedisError as error:
            return f"the Redis online store at {address} is unreachable: {error}"
        finally:
            client.close()
        return None
    if online.type == "sqlite":
        path = Path(online.path)
        if not path.is_file():
            return f"the SQLite online store {path} does not exist: run the pipeline first"
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=PROBE_TIMEOUT_S) as conn:
                conn.execute("SELECT 1").fetchone()
        except sqlite3.Error as error:
            return f"the SQLite online store {path} cannot be read: {error}"
        return None
    raise ValueError(f"no health probe for online store type {online.type!r}")


def read_online(store: FeatureStore, view: FeatureView, entities: pd.DataFrame) -> pd.DataFrame:
    """Online values of every feature of `view` for each row of `entities` (its columns
    are the view's join keys, e.g. tenant_id and user_id), one row per entity."""
    features = [f"{view.name}:{field.name}" for field in view.features]
    response = store.get_online_features(
        features=features, entity_rows=entities.astype(str).to_dict("records")
    )
    return response.to_df()


def read_online_as_of(
    store: FeatureStore, view: FeatureView, entities: pd.DataFrame
) -> pd.DataFrame:
    """`read_online` plus `event_timestamp`: the time the online row is as of, NaT when the
    store has no row. Feast keeps online timestamps in whole seconds."""
    features = [f"{view.name}:{field.name}" for field in view.features]
    response = store.get_online_features(
        features=features, entity_rows=entities.astype(str).to_dict("records")
    )
    frame = response.to_df(include_event_timestamps=True)
    seconds = frame[view.features[0].name + TIMESTAMP_POSTFIX]
    frame = frame.drop(columns=[c for c in frame.columns if c.endswith(TIMESTAMP_POSTFIX)])
    # A key without a row gets the zero timestamp.
    frame["event_timestamp"] = pd.to_datetime(seconds.where(seconds > 0), unit="s", utc=True)
    return frame


def without_stale_values(
    features: dict[str, list], ttls: Mapping[str, timedelta], now: datetime
) -> dict[str, list]:
    """Feast's online stores return a row whatever its age (feast#6821); the offline
    point-in-time join gives null once it is older than the view's ttl. Make the online
    answer (a `to_dict(include_event_timestamps=True)` dict) say the same: the values of
    each view in `ttls` older than its ttl become None, and the timestamp entries are
    dropped."""
    oldest = {view: (now - ttl).timestamp() for view, ttl in ttls.items()}
    fresh: dict[str, list] = {}
    for name, values in features.items():
        if name.endswith(TIMESTAMP_POSTFIX):
            continue
        stamps = features.get(name + TIMESTAMP_POSTFIX)
        view = name.split("__", 1)[0]
        if view in oldest and stamps is not None:
            limit = oldest[view]
            values = [v if s >= limit else None for v, s in zip(values, stamps, strict=True)]
        fresh[name] = values
    return fresh


def online_user_features(
    store: FeatureStore, tenant_id: str, user_ids: Sequence[str], now: datetime
) -> dict[str, list]:
    """The user tower's online inputs for `tenant_id`'s `user_ids` (daily features and the
    streaming last items), as Feast's dict of lists with full feature names, one entry per
    user; values older than their view's ttl are null, as in the training set's
    point-in-time join."""
    response = store.get_online_features(
        features=USER_TOWER_REFS,
        entity_rows=[{TENANT_KEY: tenant_id, "user_id": user} for user in user_ids],
        full_feature_names=True,
    )
    return without_stale_values(response.to_dict(include_event_timestamps=True), ONLINE_TTLS, now)


@dataclass(frozen=True)
class ViewMaterialization:
    """One view's incremental materialization: its window, the online rows after it, and
    the parity of what it wrote with the latest offline rows."""

    view: str
    start: datetime
    end: datetime
    online_rows: int
    parity: ParityReport


def materialize_view(
    store: FeatureStore,
    marts: Path,
    view_name: str,
    join_keys: Sequence[str],
    log: Callable[[str], None],
) -> ViewMaterialization:
    """Materialize `view_name` from where it last ended to its mart's newest row, then
    compare every online value with the latest offline one as of the window's end."""
    view = store.get_feature_view(view_name)
    mart = marts / f"{view_name}.parquet"
    start, end = materialization_window(*mart_time_range(mart), view.most_recent_end_time)
    log(f"materializing {view_name} from {start} to {end}")
    store.materialize(start_date=start, end_date=end, feature_views=[view_name])
    offline = latest_offline_rows(mart, join_keys, end)
    online = read_online(store, view, offline[list(join_keys)])
    parity = compare_parity(offline, online, join_keys, [f.name for f in view.features])
    return ViewMaterialization(view_name, start, end, count_online_entities(store, view), parity)
