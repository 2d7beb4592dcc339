"""Reads of the validated event log (DuckDB over its parquet files).

The assets, sensors, readouts and off-policy evaluation all read the log through
these functions, so a query (and its time zone, its glob, its handling of an empty
log) is written once. A glob that matches nothing makes DuckDB's `read_parquet`
fail, so every read first asks whether there is anything to read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import duckdb
import pandas as pd

from recloop.data.layout import DataLayout
from recloop.data.schemas import ENGAGEMENT_TYPES

SERVED_COLUMNS = (
    "event_id",
    "user_id",
    "item_id",
    "event_type",
    "value",
    "event_timestamp",
    "request_id",
    "model_version",
)
ENGAGEMENT_COLUMNS = (
    "event_id",
    "tenant_id",
    "user_id",
    "item_id",
    "event_type",
    "event_timestamp",
    "request_id",
    "position",
)
LOGGED_COLUMNS = (
    "event_id",
    "tenant_id",
    "user_id",
    "item_id",
    "event_type",
    "event_timestamp",
    "request_id",
    "model_version",
    "variant",
    "position",
    "propensity",
)


def validated_events_glob(layout: DataLayout, tenant: str | None = None) -> str | None:
    """The DuckDB glob of one tenant's (or every tenant's) validated events; None when
    there are none yet."""
    directory = layout.validated_events_of(tenant) if tenant else layout.validated_events
    tenants = "" if tenant else "tenant=*/"
    if not any(directory.glob(f"{tenants}date=*/*.parquet")):
        return None
    return str(directory / f"{tenants}date=*" / "*.parquet")


@contextmanager
def _utc_connection() -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection that reads and returns timestamps in UTC."""
    with duckdb.connect() as conn:
        conn.execute("set TimeZone = 'UTC'")
        yield conn


def served_events(layout: DataLayout, tenant: str) -> pd.DataFrame:
    """Validated impressions and engagements that a model served (model_version set)."""
    pattern = validated_events_glob(layout, tenant)
    if pattern is None:
        return pd.DataFrame(columns=list(SERVED_COLUMNS))
    with _utc_connection() as conn:
        return conn.execute(
            f"select {', '.join(SERVED_COLUMNS)} from read_parquet($pattern, union_by_name = true) "
            "where model_version is not null and event_type in ('impression', 'click', 'purchase')",
            {"pattern": pattern},
        ).df()


def events_after(layout: DataLayout, tenant: str, after: pd.Timestamp) -> int:
    """Validated events of `tenant` stamped after `after`."""
    pattern = validated_events_glob(layout, tenant)
    if pattern is None:
        return 0
    with _utc_connection() as conn:
        (count,) = conn.execute(
            "select count(*) from read_parquet($pattern, union_by_name = true) "
            "where event_timestamp > $after",
            {"pattern": pattern, "after": after.to_pydatetime()},
        ).fetchone()
    return int(count)


def newest_validated_event(layout: DataLayout, tenant: str) -> pd.Timestamp | None:
    """Time of the newest validated event of `tenant`: what a model trained now has seen."""
    pattern = validated_events_glob(layout, tenant)
    if pattern is None:
        return None
    with _utc_connection() as conn:
        (newest,) = conn.execute(
            "select max(event_timestamp) from read_parquet($pattern, union_by_name = true)",
            {"pattern": pattern},
        ).fetchone()
    return None if newest is None else pd.Timestamp(newest).tz_convert("UTC")


def item_genres(layout: DataLayout, tenant: str) -> dict[str, str]:
    """item_id -> '|'-separated genres from the newest validated item snapshot."""
    pattern = str(layout.validated_catalog("items", tenant) / "*.parquet")
    with duckdb.connect() as conn:
        rows = conn.execute(
            "select item_id, arg_max(genres, snapshot_date) from read_parquet($pattern, "
            "union_by_name = true) group by item_id",
            {"pattern": pattern},
        ).fetchall()
    return {str(item): str(genres or "") for item, genres in rows}


def logged_events(layout: DataLayout, since: datetime, variant_prefix: str = "") -> pd.DataFrame:
    """Validated impressions and engagements that answer a served request, every tenant,
    since `since` (and only variants starting with `variant_prefix`)."""
    pattern = validated_events_glob(layout)
    if pattern is None:
        return pd.DataFrame(columns=list(LOGGED_COLUMNS))
    with _utc_connection() as conn:
        return conn.execute(
            f"select {', '.join(LOGGED_COLUMNS)} from read_parquet($pattern, union_by_name = true) "
            "where event_timestamp >= $since and request_id is not null "
            "and starts_with(coalesce(variant, ''), $prefix) "
            "and event_type in ('impression', 'click', 'purchase')",
            {"pattern": pattern, "since": since, "prefix": variant_prefix},
        ).df()


def engagements_of(layout: DataLayout, users: list[str]) -> pd.DataFrame:
    """Every validated engagement (click, purchase, rating) of `users`, all time: what the
    user had consumed before a request (the client excludes it from the candidates) and
    what the streaming features count."""
    pattern = validated_events_glob(layout)
    if pattern is None or not users:
        return pd.DataFrame(columns=list(ENGAGEMENT_COLUMNS))
    with _utc_connection() as conn:
        conn.register("asked", pd.DataFrame({"user_id": users}))
        return conn.execute(
            f"select {', '.join(ENGAGEMENT_COLUMNS)} "
            "from read_parquet($pattern, union_by_name = true) "
            f"where event_type in {tuple(ENGAGEMENT_TYPES)} "
            "and user_id in (select user_id from asked)",
            {"pattern": pattern},
        ).df()


def interactions(layout: DataLayout, tenant: str | None = None) -> pd.DataFrame:
    """The labels mart (dbt `user_item_interactions`): `tenant`'s rows, or every tenant's."""
    frame = pd.read_parquet(layout.interactions_mart)
    if tenant is None:
        return frame
    return frame.loc[frame["tenant_id"].astype(str) == tenant].reset_index(drop=True)


def labels_by_tenant(layout: DataLayout) -> dict[str, int]:
    """Labels per tenant in the labels mart ({} before dbt built it)."""
    if not layout.interactions_mart.exists():
        return {}
    tenants = pd.read_parquet(layout.interactions_mart, columns=["tenant_id"])["tenant_id"]
    return {str(t): int(n) for t, n in tenants.astype(str).value_counts().items()}


def training_tenant(layout: DataLayout, tenant: str | None) -> str:
    """The tenant a model trains for: `tenant` if it has labels, else the only tenant with
    labels. A model never mixes tenants, whose ids mean different users and items."""
    tenants = sorted(labels_by_tenant(layout))
    if tenant is not None:
        if tenant not in tenants:
            raise ValueError(f"tenant {tenant!r} has no labels to train on; tenants: {tenants}")
        return tenant
    if len(tenants) != 1:
        raise ValueError(
            f"the labels hold {len(tenants)} tenants ({', '.join(tenants) or 'none'}): "
            "name the one to train for (the training run's tenant partition, or an "
            "experiment audience's `tenants`)"
        )
    return tenants[0]


def catalog_item_keys(layout: DataLayout, tenant: str) -> pd.DataFrame:
    """Every item of `tenant`'s catalog (dbt `int_items`) as `tenant_id`, `item_id`
    strings, sorted by item id."""
    with duckdb.connect(str(layout.warehouse), read_only=True) as warehouse:
        frame = warehouse.execute(
            "select tenant_id, item_id from int_items where tenant_id = $tenant order by item_id",
            {"tenant": tenant},
        ).df()
    return frame.astype(str)


def catalog_items(layout: DataLayout, tenant: str) -> pd.DataFrame:
    """Each of `tenant`'s catalog items' genres and release year (dbt `int_items`), sorted
    by item id: the labels-only training set's catalog, whose content the multi-stage
    ranker reads."""
    with duckdb.connect(str(layout.warehouse), read_only=True) as warehouse:
        frame = warehouse.execute(
            "select item_id, genres, release_year from int_items where tenant_id = $tenant "
            "order by item_id",
            {"tenant": tenant},
        ).df()
    return frame.assign(item_id=frame["item_id"].astype(str))


def catalog_texts(layout: DataLayout) -> pd.DataFrame:
    """Each catalog item's tenant, title and genres (dbt `int_items`): what its text
    embedding reads."""
    with duckdb.connect(str(layout.warehouse), read_only=True) as warehouse:
        return warehouse.execute(
            "select tenant_id, item_id, title, genres from int_items order by tenant_id, item_id"
        ).df()
