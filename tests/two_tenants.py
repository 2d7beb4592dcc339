"""Two tenants as independent customers: the same user ids, partly the same item ids,
other tastes and catalogs of their own; the features built, ready for each tenant's
partition of the (EASE) champion chain."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg

from assets.definitions import TRAINING_JOB, build_definitions
from recloop.data.layout import DataLayout
from recloop.data.movielens import MovieLensFrames, to_raw_log, write_raw_log
from recloop.settings import Settings
from tests.integration.test_pipeline import tiny_features_run
from tests.integration.test_refit_serving import DAYS, ITEMS, positives_only_frames

TENANTS = ("books", "shop")
# Shop's items are books' shifted by this: ids 21-40 are in both catalogs (other items
# under the same id), 1-20 only in books', 41-60 only in shop's.
SHOP_ITEM_SHIFT = 20
# Gates relaxed: these tests are about whose champion serves what, not about quality.
RELAXED = {"search_l2": False, "min_lift_over_popularity": -1.0, "max_popularity_ratio": 100.0}


def catalog(tenant: str) -> set[str]:
    shift = SHOP_ITEM_SHIFT if tenant == "shop" else 0
    return {str(int(item) + shift) for item in ITEMS}


def _shifted(frames: MovieLensFrames, shift: int) -> MovieLensFrames:
    def move(ids):
        return ids.map(lambda item: str(int(item) + shift))

    ratings = frames.ratings.assign(item_id=move(frames.ratings["item_id"]))
    items = frames.items.assign(item_id=move(frames.items["item_id"]))
    return MovieLensFrames(ratings=ratings, users=frames.users, items=items)


@dataclass(frozen=True)
class TwoTenants:
    settings: Settings
    instance: dg.DagsterInstance

    def train(self, tenant: str, l2: float = 50.0) -> dg.ExecuteInProcessResult:
        """One run of `train_and_promote` for the tenant's partition."""
        job = build_definitions(self.settings).resolve_job_def(TRAINING_JOB)
        return job.execute_in_process(
            instance=self.instance,
            partition_key=tenant,
            run_config={"ops": {"model_candidate": {"config": {"l2": l2, **RELAXED}}}},
            raise_on_error=False,
        )


def _log_days() -> list[date]:
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    return [yesterday - timedelta(days=DAYS - 1 - n) for n in range(DAYS)]


# Ending yesterday, so the online features are fresh.
LOG_DAYS = _log_days()


def tenant_frames(tenant: str) -> MovieLensFrames:
    """Books' log and catalogs (seed 14) or shop's (seed 15, items shifted)."""
    if tenant == "books":
        return positives_only_frames(LOG_DAYS, seed=14)
    return _shifted(positives_only_frames(LOG_DAYS, seed=15), SHOP_ITEM_SHIFT)


def write_tenant_log(layout: DataLayout, tenant: str) -> None:
    write_raw_log(to_raw_log(tenant_frames(tenant), tenant), layout)


@contextmanager
def two_tenant_system(
    root: Path, dagster_home: Path | None = None, **stores: object
) -> Iterator[TwoTenants]:
    """Both tenants' logs through validation, dbt and Feast. `stores`: Settings fields
    that move the stores elsewhere (the scale profile's); `dagster_home`: the instance its
    dagster.yaml configures, instead of a test instance of the embedded kind."""
    layout = DataLayout(root / "data")
    for tenant in TENANTS:
        write_tenant_log(layout, tenant)
    settings = Settings(
        data_dir=layout.root, partitions_start=LOG_DAYS[0], champion_algorithm="ease", **stores
    )
    (root / "dagster").mkdir()
    instance = (
        dg.DagsterInstance.from_config(str(dagster_home))
        if dagster_home
        else dg.instance_for_test(temp_dir=str(root / "dagster"))
    )
    with instance as opened:
        tiny_features_run(settings, opened, TENANTS)
        yield TwoTenants(settings, opened)
