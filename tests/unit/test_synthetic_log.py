"""The synthetic event generator: seeded, in the raw contract, and shaped like the logs it
stands in for (heavy tails, position bias, tastes, exact propensities, a growing catalog)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from recloop.data.layout import DataLayout, parquet_files
from recloop.data.synthetic import (
    SyntheticLog,
    SyntheticLogError,
    SyntheticWorld,
    day_events,
    plackett_luce_slates,
    write_synthetic_log,
)
from recloop.data.validation import validate_events

LOG = SyntheticLog(events=60_000, days=6, seed=3)


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    world = SyntheticWorld.of(LOG)
    return pd.concat(
        [day_events(LOG, world, day).to_pandas() for day in range(LOG.days)], ignore_index=True
    )


def test_the_same_seed_writes_the_same_log_and_another_seed_another(tmp_path) -> None:
    first, again = DataLayout(tmp_path / "a"), DataLayout(tmp_path / "b")
    small = replace(LOG, events=5_000)
    assert write_synthetic_log(small, first) == write_synthetic_log(small, again)
    for day in first.event_days(small.tenant):
        (one,), (two,) = (
            parquet_files(out.raw_events_partition(small.tenant, day)) for out in (first, again)
        )
        assert pq.read_table(one).equals(pq.read_table(two))
    world = SyntheticWorld.of(small)
    other = day_events(replace(small, seed=4), SyntheticWorld.of(replace(small, seed=4)), 0)
    assert not other.equals(day_events(small, world, 0))


def test_a_day_written_alone_equals_that_day_of_the_whole_log(tmp_path) -> None:
    small = replace(LOG, events=5_000)
    whole, incremental = DataLayout(tmp_path / "whole"), DataLayout(tmp_path / "incremental")
    write_synthetic_log(small, whole)
    write_synthetic_log(small, incremental, days=range(small.days - 1))
    report = write_synthetic_log(small, incremental, days=range(small.days - 1, small.days))
    assert (report.days, report.item_snapshots) == (1, 0)  # a new day adds events only
    beyond = write_synthetic_log(small, incremental, range(small.days, small.days + 1), 20_000)
    assert 0.8 * 20_000 < beyond.events < 1.2 * 20_000
    last = small.first_day + timedelta(days=small.days - 1)
    (a,), (b,) = (
        parquet_files(out.raw_events_partition(small.tenant, last)) for out in (whole, incremental)
    )
    assert pq.read_table(a).equals(pq.read_table(b))


def test_every_event_passes_the_raw_contract(events: pd.DataFrame) -> None:
    day = events["event_timestamp"].dt.date.iloc[0]
    one_day = events[events["event_timestamp"].dt.date == day]
    result = validate_events(one_day, tenant=LOG.tenant, day=day, now=datetime.now(UTC))
    assert len(result.valid) == len(one_day) and result.quarantined.empty
    assert events["event_id"].is_unique
    assert 0.8 * LOG.events < len(events) < 1.2 * LOG.events


def test_users_and_items_have_heavy_tails(events: pd.DataFrame) -> None:
    impressions = events[events["event_type"] == "impression"]
    for column, top_share in (("item_id", 0.4), ("user_id", 0.3)):
        counts = impressions[column].value_counts().to_numpy()
        top = counts[: max(1, len(counts) // 10)].sum() / counts.sum()
        assert top > top_share, (column, top)


def test_clicks_fall_with_position_and_follow_tastes(events: pd.DataFrame) -> None:
    shown = events[events["event_type"] == "impression"].set_index(["request_id", "item_id"])
    clicks = events[events["event_type"] == "click"].set_index(["request_id", "item_id"])
    shown = shown.assign(clicked=shown.index.isin(clicks.index))
    ctr = shown.groupby("position")["clicked"].mean()
    assert ctr.iloc[0] > 2 * ctr.iloc[4] > 0 and ctr.iloc[0] > 5 * ctr.iloc[9]
    world = SyntheticWorld.of(LOG)
    users = shown.reset_index()
    match = (
        world.item_topics[users["item_id"].astype(int)]
        == world.user_topics[users["user_id"].astype(int)]
    )
    by_match = users.assign(match=match).groupby("match")["clicked"].mean()
    assert by_match[True] > 3 * by_match[False]
    ratings = events[events["event_type"] == "rating"]["value"]
    assert ratings.between(0.5, 5.0).all() and (ratings * 2 % 1 == 0).all()


def test_propensities_are_the_plackett_luce_probabilities() -> None:
    weights = np.array([0.5, 0.3, 0.2])
    chosen, propensity = plackett_luce_slates(np.random.default_rng(0), weights, 40_000, 2)
    first = np.bincount(chosen[:, 0], minlength=3) / len(chosen)
    np.testing.assert_allclose(first, weights, atol=0.01)
    np.testing.assert_allclose(propensity[:, 0], weights[chosen[:, 0]])
    # The second draw's probability given the first: w_j / (1 - w_i).
    np.testing.assert_allclose(
        propensity[:, 1], weights[chosen[:, 1]] / (1 - weights[chosen[:, 0]])
    )
    given_zero = chosen[chosen[:, 0] == 0, 1]
    np.testing.assert_allclose((given_zero == 1).mean(), 0.3 / 0.5, atol=0.02)


def test_items_are_shown_only_from_their_arrival_and_snapshots_grow(tmp_path, events) -> None:
    world = SyntheticWorld.of(LOG)
    shown = events[events["event_type"] == "impression"]
    day_index = (shown["event_timestamp"].dt.date - LOG.first_day).map(lambda d: d.days)
    assert (world.item_arrival[shown["item_id"].astype(int)] <= day_index).all()
    assert 0 < (world.item_arrival > 0).mean() <= 1 - LOG.initial_catalog + 0.01
    layout = DataLayout(tmp_path)
    report = write_synthetic_log(replace(LOG, events=5_000, days=15), layout)
    sizes = [
        pq.read_metadata(path).num_rows
        for path in parquet_files(layout.raw_catalog("items", LOG.tenant))
    ]
    assert (
        report.item_snapshots == len(sizes) == 3 and sizes == sorted(sizes) and sizes[0] < sizes[-1]
    )
    # Every item shown is in a catalog snapshot dated on or before the day it is shown.
    announced: dict[str, date] = {}
    for path in parquet_files(layout.raw_catalog("items", LOG.tenant)):
        for item in pq.read_table(path)["item_id"].to_pylist():
            announced.setdefault(item, date.fromisoformat(path.stem))
    for day in layout.event_days(LOG.tenant):
        for path in parquet_files(layout.raw_events_partition(LOG.tenant, day)):
            shown_items = set(pq.read_table(path, columns=["item_id"])["item_id"].to_pylist())
            assert all(announced[item] <= day for item in shown_items), day


def test_impossible_shapes_are_refused_with_the_reason() -> None:
    with pytest.raises(SyntheticLogError, match="events must be positive"):
        SyntheticLog(events=0)
    with pytest.raises(SyntheticLogError, match="10 items cannot fill a slate of 20"):
        SyntheticLog(events=1_000, items=10, slate=20)
