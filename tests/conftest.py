"""Shared fixtures (tiny synthetic logs in temporary data directories) and the test tiers.

A test's tier is its folder: `unit/` (pure, no servers, the whole tier under a
minute), `integration/` (real DuckDB, SQLite, Redis, Feast, Dagster in process),
`e2e/` (a live HTTP service, the Dagster daemon, simulated users). The folder sets
the marker, so `pytest -m unit` and `make test-unit` select exactly the fast tier.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recloop.data.layout import DataLayout
from recloop.data.movielens import MovieLensFrames, to_raw_log, write_raw_log
from recloop.settings import Settings

TIERS = ("unit", "integration", "e2e")


def pytest_configure(config: pytest.Config) -> None:
    """Under `pytest -n N` each worker is a process per core; torch's own thread pool
    would oversubscribe the cores and its spinning threads slow every test severalfold."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the tier of the folder it lives in; a test outside them fails."""
    tests_root = Path(__file__).parent
    for item in items:
        tier = item.path.relative_to(tests_root).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/{{{','.join(TIERS)}}}/")
        item.add_marker(getattr(pytest.mark, tier))


TINY_TENANT = "shop"
TINY_DAYS = (date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3))
GENRES = ("Action", "Comedy", "Drama", "Sci-Fi")


def tiny_frames(
    days: tuple[date, ...] = TINY_DAYS,
    users: int = 12,
    items: int = 9,
    ratings_per_day: int = 20,
    seed: int = 7,
) -> MovieLensFrames:
    """A small MovieLens-shaped data set: seeded, a few ratings a day."""
    rng = np.random.default_rng(seed)
    rows = []
    for day in days:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        seconds = np.sort(rng.integers(0, 86_400, ratings_per_day))
        for second in seconds:
            rows.append(
                {
                    "user_id": str(rng.integers(1, users + 1)),
                    "item_id": str(rng.integers(1, items + 1)),
                    "rating": float(rng.integers(1, 6)),
                    "timestamp": int((start + timedelta(seconds=int(second))).timestamp()),
                }
            )
    ratings = pd.DataFrame(rows).drop_duplicates(["user_id", "item_id", "timestamp"])
    user_frame = pd.DataFrame(
        {
            "user_id": [str(i) for i in range(1, users + 1)],
            "age": pd.array(rng.integers(18, 70, users), dtype="Int64"),
            "gender": rng.choice(["F", "M"], users),
            "occupation": rng.choice(["writer", "student", "engineer"], users),
            "zip_code": [f"{10000 + i}" for i in range(users)],
        }
    )
    item_frame = pd.DataFrame(
        {
            "item_id": [str(i) for i in range(1, items + 1)],
            "title": [f"Movie {i}" for i in range(1, items + 1)],
            "release_year": pd.array(rng.integers(1970, 2020, items), dtype="Int64"),
            "genres": ["|".join(rng.choice(GENRES, 2, replace=False)) for _ in range(items)],
        }
    )
    return MovieLensFrames(ratings=ratings, users=user_frame, items=item_frame)


def write_tiny_log(data_dir: Path, tenant: str = TINY_TENANT, **kwargs) -> DataLayout:
    layout = DataLayout(data_dir)
    write_raw_log(to_raw_log(tiny_frames(**kwargs), tenant), layout)
    return layout


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def tiny_log(data_dir: Path) -> DataLayout:
    return write_tiny_log(data_dir)


@pytest.fixture
def tiny_settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, partitions_start=date(2024, 1, 1))
