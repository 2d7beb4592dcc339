"""Feast's point-in-time join (DuckDB offline store) against a brute-force oracle.

The oracle states the semantics recloop relies on (ARCHITECTURE.md: "PIT join includes a
feature stamped exactly at label time"): for a label (user, t), the candidates
are the user's rows with t - ttl <= event_timestamp <= t, both ends inclusive;
the latest event_timestamp wins, ties broken by the latest `created`. A
candidate's value is returned even when it is null (no fallback to an older row).

Feast 0.67 (feast/infra/offline_stores/ibis.py, `point_in_time_join`) joins on
`event_timestamp <= t` and `event_timestamp + ttl >= t`, then keeps one row per
(user, t) ordered by event_timestamp desc, created desc, which is the same rule.
`created` is not compared with t: `filter_by_created_timestamp` defaults to
False, so a row created after the label time is still used. The generated data
covers that on purpose, so a change of that default would fail here.

The store is applied once per module; each example only rewrites the Parquet
file behind the FileSource, which keeps 200 examples fast. Feast reads that file
through ibis's process-wide DuckDB connection, whose external file cache (on by
default in DuckDB 1.5) checks a file's mtime to the second only: a file rewritten
within the same second is read from stale cached bytes, giving wrong rows or
`_duckdb.Error: Out of buffer`. The fixture turns that cache off while it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import ibis
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.repo_config import RepoConfig
from feast.types import Int64
from hypothesis import given, settings
from hypothesis import strategies as st

TTL = timedelta(days=5)
T0 = datetime(2024, 3, 1, tzinfo=UTC)
USERS = ("u1", "u2", "u3", "u4")
# Days chosen so that gaps of 5 days (= ttl) are common, each with a one-second
# step either side: exact ties at label time, rows one second after it, and rows
# exactly ttl (and ttl +/- 1 s) old all happen often.
TIME_GRID = tuple(
    T0 + timedelta(days=day, seconds=second) for day in (0, 1, 2, 5, 6, 7) for second in (-1, 0, 1)
)
# Created = event_timestamp + delay; some delays pass the label time (see module doc).
CREATED_DELAYS = tuple(timedelta(hours=hours) for hours in (0, 1, 2, 30, 200))
# A label at a row's event_timestamp plus one of these puts that row exactly at
# label time, 1 s either side of it, or ttl (+/- 1 s) before it.
BOUNDARY_OFFSETS = tuple(
    base + timedelta(seconds=second) for base in (timedelta(0), TTL) for second in (-1, 0, 1)
)
FEATURE_REF = "user_value:value"

FEATURE_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("value", pa.int64()),
        ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ("created", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class FeatureRow:
    user_id: str
    event_timestamp: datetime
    created: datetime
    value: int | None


@dataclass(frozen=True)
class Label:
    user_id: str
    event_timestamp: datetime


@dataclass(frozen=True)
class PitStore:
    store: FeatureStore
    parquet: Path


@pytest.fixture(scope="module")
def pit_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PitStore]:
    """One applied Feast store over a Parquet path that each example rewrites."""
    repo = tmp_path_factory.mktemp("pit_repo")
    parquet = repo / "user_value.parquet"
    write_features(parquet, [])
    config = RepoConfig(
        project="pit",
        provider="local",
        registry=str(repo / "registry.db"),
        offline_store={"type": "duckdb"},
        online_store={"type": "sqlite", "path": str(repo / "online.db")},
        repo_path=repo,
        entity_key_serialization_version=3,
    )
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    source = FileSource(
        name="user_value_source",
        path=str(parquet),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    view = FeatureView(
        name="user_value",
        entities=[user],
        ttl=TTL,
        schema=[Field(name="value", dtype=Int64)],
        source=source,
        online=False,
    )
    store = FeatureStore(config=config)
    store.apply([user, source, view])
    connection = ibis.get_backend()
    (cache_on,) = connection.raw_sql(
        "SELECT current_setting('enable_external_file_cache')"
    ).fetchone()
    connection.raw_sql("SET enable_external_file_cache = false")
    yield PitStore(store=store, parquet=parquet)
    connection.raw_sql(f"SET enable_external_file_cache = {cache_on}")


def write_features(path: Path, rows: list[FeatureRow]) -> None:
    """Write rows in the given order: file order must not matter to the join."""
    table = pa.Table.from_pylist(
        [
            {
                "user_id": row.user_id,
                "value": row.value,
                "event_timestamp": row.event_timestamp,
                "created": row.created,
            }
            for row in rows
        ],
        schema=FEATURE_SCHEMA,
    )
    pq.write_table(table, path)


def oracle(rows: list[FeatureRow], label: Label) -> int | None:
    """The expected value for one label, by scanning every row."""
    candidates = [
        row
        for row in rows
        if row.user_id == label.user_id
        and label.event_timestamp - TTL <= row.event_timestamp <= label.event_timestamp
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda row: (row.event_timestamp, row.created)).value


def feast_values(
    pit: PitStore, rows: list[FeatureRow], labels: list[Label]
) -> dict[int, int | None]:
    """Feast's value per label id, after checking there is exactly one output row per label."""
    write_features(pit.parquet, rows)
    entity_df = pd.DataFrame(
        {
            "label_id": range(len(labels)),
            "user_id": [label.user_id for label in labels],
            "event_timestamp": pd.to_datetime(
                [label.event_timestamp for label in labels], utc=True
            ),
        }
    )
    result = pit.store.get_historical_features(entity_df=entity_df, features=[FEATURE_REF]).to_df()
    assert sorted(result["label_id"]) == list(range(len(labels))), "labels lost or duplicated"
    return {
        int(label_id): None if pd.isna(value) else int(value)
        for label_id, value in zip(result["label_id"], result["value"], strict=True)
    }


def assert_matches_oracle(pit: PitStore, rows: list[FeatureRow], labels: list[Label]) -> None:
    got = feast_values(pit, rows, labels)
    expected = {label_id: oracle(rows, label) for label_id, label in enumerate(labels)}
    assert got == expected


@st.composite
def feature_rows(draw: st.DrawFn) -> list[FeatureRow]:
    """Rows on the shared grid, in shuffled file order, values unique per row.

    Each (user, event_timestamp) gets one to three distinct created delays, so
    duplicates that only `created` can order are common but never fully tied.
    """
    stamps = draw(
        st.lists(
            st.tuples(st.sampled_from(USERS), st.sampled_from(TIME_GRID)),
            max_size=8,
            unique=True,
        )
    )
    keys = [
        (user_id, event_timestamp, event_timestamp + delay)
        for user_id, event_timestamp in stamps
        for delay in draw(
            st.lists(st.sampled_from(CREATED_DELAYS), min_size=1, max_size=3, unique=True)
        )
    ]
    nulls = draw(st.lists(st.booleans(), min_size=len(keys), max_size=len(keys)))
    order = draw(st.permutations(range(len(keys))))
    return [
        FeatureRow(
            user_id=keys[i][0],
            event_timestamp=keys[i][1],
            created=keys[i][2],
            value=None if nulls[i] else i,
        )
        for i in order
    ]


def labels_near(rows: list[FeatureRow]) -> st.SearchStrategy[Label]:
    """Labels on the grid, or on a boundary of a generated row (label time, ttl, +/- 1 s).

    Grid labels alone rarely make the ttl boundary decide a result: a newer row of
    the same user is usually in the window. Anchoring labels on rows fixes that.
    """
    on_grid = st.builds(
        Label, user_id=st.sampled_from(USERS), event_timestamp=st.sampled_from(TIME_GRID)
    )
    if not rows:
        return on_grid
    on_boundary = st.builds(
        lambda row, offset: Label(row.user_id, row.event_timestamp + offset),
        st.sampled_from(rows),
        st.sampled_from(BOUNDARY_OFFSETS),
    )
    return st.one_of(on_grid, on_boundary)


@st.composite
def pit_cases(draw: st.DrawFn) -> tuple[list[FeatureRow], list[Label]]:
    rows = draw(feature_rows())
    return rows, draw(st.lists(labels_near(rows), min_size=1, max_size=8))


@settings(max_examples=200, deadline=None, database=None)
@given(case=pit_cases())
def test_pit_join_matches_oracle(
    pit_store: PitStore, case: tuple[list[FeatureRow], list[Label]]
) -> None:
    """Generated rows and labels: Feast agrees with the oracle on every label."""
    assert_matches_oracle(pit_store, *case)


def test_pit_join_hand_written_cases(pit_store: PitStore) -> None:
    """Each boundary on its own user, so a wrong pick names the rule it broke."""
    t = T0 + timedelta(days=6)
    second = timedelta(seconds=1)
    rows = [
        # u1: a row stamped exactly at label time is included and beats an older one.
        FeatureRow("u1", t - timedelta(days=1), t, 10),
        FeatureRow("u1", t, t, 11),
        # u2: a row one second after label time is excluded.
        FeatureRow("u2", t - timedelta(days=1), t, 20),
        FeatureRow("u2", t + second, t + second, 21),
        # u3: a row 1 s older than ttl is excluded.
        FeatureRow("u3", t - TTL - second, t, 30),
        # u4: a row exactly ttl old is still included.
        FeatureRow("u4", t - TTL, t, 40),
        # u5: a late-arriving duplicate (same event_timestamp, later created, written
        # after a newer row) wins, though it was created after the label time.
        FeatureRow("u5", t - timedelta(days=2), t - timedelta(days=2), 50),
        FeatureRow("u5", t - timedelta(days=1, hours=12), t - timedelta(days=1), 52),
        FeatureRow("u5", t - timedelta(days=2), t + timedelta(days=1), 51),
    ]
    labels = [Label(user, t) for user in ("u1", "u2", "u3", "u4")]
    labels.append(Label("u5", t - timedelta(days=1, hours=13)))
    assert feast_values(pit_store, rows, labels) == {0: 11, 1: 20, 2: None, 3: 40, 4: 51}
    assert_matches_oracle(pit_store, rows, labels)
