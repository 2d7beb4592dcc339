"""`make bench`: time the cold demo pipeline and Feast materialization throughput.

1. The whole demo (`drivers.demo.run_demo`) in a fresh data directory with an
   ephemeral Dagster instance: what a new user waits for after `make install`.
2. `FeatureStore.materialize` of a synthetic user_features mart of --rows users
   into each online store. A warm-up materialize of the small item view runs
   first, so Feast's start-up (registry, offline-store import, online tables)
   is timed apart from the write itself.

Prints a table and writes bench/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import redis
from feast import FeatureStore, FeatureView
from feast.types import Float64, Int64
from tqdm import tqdm

from feature_repo.definitions import activity_fields, build_feature_objects
from feature_repo.store import (
    count_online_entities,
    install_monotonic_guard,
    open_feature_store,
    redis_url_from_feast,
)
from recloop.data.layout import DataLayout
from recloop.data.movielens import RECBOLE_WHEEL
from recloop.settings import Settings

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "pipeline.json"
GENRES_SEED = Path(__file__).resolve().parent.parent / "dbt_project" / "seeds" / "genres.csv"
STORES = ("sqlite", "redis")
SEED = 20240630
TENANT = "bench"
ITEM_ROWS = 1_000
# Rows spread over a month of daily feature dates, as a month of dbt marts would be.
FEATURE_DAYS = 30
LAST_FEATURE_DATE = date(2024, 6, 30)
REDIS_BATCH = 10_000
VERSIONED = ("feast", "dagster", "dagster-dbt", "dbt-duckdb", "duckdb", "pyarrow", "redis")

T = TypeVar("T")


class BenchError(RuntimeError):
    """A benchmark step did not do what it must; its timing would be meaningless."""


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    stage: str
    store: str
    rows: int | None
    seconds: float | None
    note: str = ""

    @property
    def rows_per_s(self) -> float | None:
        if self.rows is None or not self.seconds:
            return None
        return self.rows / self.seconds

    def as_json(self) -> dict[str, object]:
        return {
            "stage": self.stage,
            "store": self.store,
            "rows": self.rows,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "rows_per_s": None if self.rows_per_s is None else round(self.rows_per_s, 1),
            "note": self.note,
        }


def timed(action: Callable[[], T]) -> tuple[T, float]:
    """Run `action`; return its result and wall seconds."""
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def run_suffix(rep: int, repeat: int) -> str:
    """Label repetitions only when there are several."""
    return "" if repeat == 1 else f" #{rep}"


# --- 1. cold demo ------------------------------------------------------------


def bench_demo(source: Settings, repeat: int) -> tuple[list[Row], list[dict]]:
    """Time `run_demo` from nothing, reusing only the recbole wheel so no download is timed."""
    # The Dagster code location needs dbt's manifest and takes seconds to import;
    # --skip-demo should not pay for that.
    import dagster as dg

    from drivers.demo import DemoError, run_demo

    cached = DataLayout(source.data_dir).cache / RECBOLE_WHEEL
    wheel: Path | None = cached if cached.exists() else None
    origin = f"copied from {cached}"
    if wheel is None:
        print(f"demo: no cached wheel at {cached}; run 1 downloads it with pip (timed)")
    rows: list[Row] = []
    summaries: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="recloop-bench-wheel-") as kept:
        for rep in range(1, repeat + 1):
            suffix = run_suffix(rep, repeat)
            with tempfile.TemporaryDirectory(prefix="recloop-bench-demo-") as tmp:
                layout = DataLayout(Path(tmp) / "data")
                if wheel is None:
                    note = "recbole wheel downloaded"
                else:
                    layout.cache.mkdir(parents=True)
                    shutil.copy2(wheel, layout.cache / RECBOLE_WHEEL)
                    note = f"recbole wheel {origin}"
                print(f"demo{suffix}: fresh data dir {layout.root}; {note}")
                settings = Settings(data_dir=layout.root)
                started = time.perf_counter()
                with dg.DagsterInstance.ephemeral() as instance:
                    try:
                        summary = run_demo(settings, instance, Path(tmp) / "artifacts")
                    except DemoError as exc:
                        raise BenchError(f"demo run {rep} failed: {exc}") from exc
                seconds = time.perf_counter() - started
                if wheel is None:
                    wheel = Path(kept) / RECBOLE_WHEEL
                    shutil.copy2(layout.cache / RECBOLE_WHEEL, wheel)
                    origin = "from run 1's download"
            rows.append(
                Row(
                    f"demo, cold (raw events){suffix}",
                    settings.online_store,
                    summary["raw_events"],
                    seconds,
                    note,
                )
            )
            summaries.append(summary)
    return rows, summaries


# --- 2. synthetic marts --------------------------------------------------------


def genre_names() -> list[str]:
    """Genres in seed order, so genre_affinity has the real mart's length and order."""
    with GENRES_SEED.open(newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: int(row["genre_index"]))
    return [row["genre"] for row in rows]


def dated_columns(rng: np.random.Generator, n: int, prefix: str, key: str) -> dict[str, pa.Array]:
    """Keys, feature dates and dbt's stamp (feature_date + 1 day, 00:00 UTC)."""
    days = np.datetime64(LAST_FEATURE_DATE, "D") - rng.integers(0, FEATURE_DAYS, n)
    return {
        "tenant_id": pa.array(np.full(n, TENANT)),
        key: pa.array([f"{prefix}{i:07d}" for i in range(n)]),
        "feature_date": pa.array(days, pa.date32()),
        "event_timestamp": pa.array(
            (days + 1).astype("datetime64[us]"), pa.timestamp("us", tz="UTC")
        ),
    }


def activity_columns(rng: np.random.Generator, n: int) -> dict[str, pa.Array]:
    """One column per `activity_fields()`, so the views' field list drives the data."""
    columns: dict[str, pa.Array] = {}
    for field in activity_fields():
        if field.dtype == Int64:
            columns[field.name] = pa.array(rng.poisson(5, n), pa.int64())
        elif field.dtype == Float64:
            columns[field.name] = pa.array(rng.uniform(0.0, 5.0, n), pa.float64())
        else:
            raise BenchError(f"no fake data for {field.name} of type {field.dtype}")
    return columns


def user_table(rng: np.random.Generator, n: int, genres: list[str]) -> pa.Table:
    affinity = rng.dirichlet(np.ones(len(genres)), n)
    offsets = np.arange(0, n * len(genres) + 1, len(genres), dtype=np.int32)
    return pa.table(
        {
            **dated_columns(rng, n, "u", "user_id"),
            **activity_columns(rng, n),
            "genre_affinity": pa.ListArray.from_arrays(offsets, pa.array(affinity.ravel())),
            "top_genre": pa.array(np.array(genres)[affinity.argmax(axis=1)]),
        }
    )


def item_table(rng: np.random.Generator, n: int, genres: list[str]) -> pa.Table:
    dated = dated_columns(rng, n, "i", "item_id")
    years = (
        dated["feature_date"].to_numpy(zero_copy_only=False).astype("datetime64[Y]").astype(int)
        + 1970
    )
    release = rng.integers(1930, LAST_FEATURE_DATE.year + 1, n).astype(np.int32)
    picks = [rng.choice(genres, size=rng.integers(1, 4), replace=False) for _ in range(n)]
    return pa.table(
        {
            **dated,
            **activity_columns(rng, n),
            "release_year": pa.array(release, pa.int32()),
            "years_since_release": pa.array((years - release).astype(np.float64)),
            "genres": pa.array(["|".join(pick) for pick in picks]),
        }
    )


def check_columns(table: pa.Table, view: FeatureView) -> None:
    """Fail before timing anything if the synthetic mart lacks a feature the view reads."""
    missing = {field.name for field in view.features} - set(table.column_names)
    if missing:
        raise BenchError(f"synthetic {view.name} lacks columns {sorted(missing)}")


def write_marts(marts: Path, users: int) -> tuple[datetime, datetime]:
    """Write both marts (seeded); return the materialization window covering every row."""
    rng = np.random.default_rng(SEED)
    genres = genre_names()
    objects = build_feature_objects(marts)
    marts.mkdir(parents=True, exist_ok=True)
    for table, view in (
        (user_table(rng, users, genres), objects.user_features),
        (item_table(rng, ITEM_ROWS, genres), objects.item_features),
    ):
        check_columns(table, view)
        pq.write_table(table, marts / f"{view.name}.parquet")
    last = datetime.combine(LAST_FEATURE_DATE, datetime.min.time(), UTC) + timedelta(days=1)
    return last - timedelta(days=FEATURE_DAYS), last + timedelta(seconds=1)


# --- 3. materialization --------------------------------------------------------


def redis_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url_from_feast(redis_url), socket_connect_timeout=2)


def redis_unreachable(redis_url: str) -> str | None:
    """Why Redis cannot be benchmarked, or None if it answers PING."""
    try:
        redis_client(redis_url).ping()
    except redis.RedisError as exc:
        return f"Redis at {redis_url} not reachable ({type(exc).__name__}: {exc})"
    return None


def delete_redis_project(redis_url: str, project: str) -> int:
    """Feast's Redis keys end with the project name: drop this run's so Redis is left as found."""
    client = redis_client(redis_url)
    deleted, batch = 0, []
    keys = client.scan_iter(match=b"*" + project.encode(), count=REDIS_BATCH)
    for key in tqdm(keys, desc=f"redis: deleting {project} keys", unit="key"):
        batch.append(key)
        if len(batch) == REDIS_BATCH:
            deleted += client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += client.unlink(*batch)
    return deleted


Window = tuple[datetime, datetime]


def bench_store(
    kind: str, marts: Path, window: Window, users: int, redis_url: str, suffix: str
) -> list[Row]:
    """A fresh registry and project per run, so every timed write lands in an empty store."""
    project = f"bench_{os.getpid()}{suffix.replace(' #', '_')}"
    with tempfile.TemporaryDirectory(prefix=f"recloop-bench-{kind}-") as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            online_store=kind,  # type: ignore[arg-type]
            redis_url=redis_url,
            feast_project=project,
        )
        try:
            return materialize_rows(settings, marts, window, users, suffix)
        finally:
            if kind == "redis":
                removed = delete_redis_project(redis_url, project)
                print(f"redis: removed {removed:,} keys of project {project}")


def materialize_rows(
    settings: Settings, marts: Path, window: Window, users: int, suffix: str
) -> list[Row]:
    """Apply, warm up on the item view, then time user_features alone and verify the count."""
    kind = settings.online_store
    print(f"\n{kind}: feast apply (project {settings.feast_project})")
    objects = build_feature_objects(marts)

    def apply() -> FeatureStore:
        store = open_feature_store(settings)
        store.apply(list(objects))
        # As the feast_feature_views asset does, so SQLite writes take the production path.
        install_monotonic_guard(store, objects.views)
        return store

    store, apply_s = timed(apply)
    start, end = window
    print(f"{kind}: warm-up materialize of item_features ({ITEM_ROWS:,} rows)")
    _, warm_s = timed(lambda: store.materialize(start, end, feature_views=["item_features"]))
    print(f"{kind}: timed materialize of user_features ({users:,} rows)")
    _, write_s = timed(lambda: store.materialize(start, end, feature_views=["user_features"]))
    print(f"{kind}: counting online user entities")
    online, count_s = timed(lambda: count_online_entities(store, objects.user_features))
    if online != users:
        raise BenchError(f"{kind}: {online:,} user entities online after materializing {users:,}")
    return [
        Row(f"feast open + apply{suffix}", kind, None, apply_s),
        Row(
            f"materialize item_features (warm-up){suffix}",
            kind,
            ITEM_ROWS,
            warm_s,
            "includes Feast's first-call start-up",
        ),
        Row(f"materialize user_features{suffix}", kind, users, write_s, "timed write"),
        Row(f"count online user entities{suffix}", kind, online, count_s, "verified"),
    ]


# --- report --------------------------------------------------------------------


def machine_info(redis_url: str, redis_skip: str | None) -> dict[str, object]:
    info: dict[str, object] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        **{name: version(name) for name in VERSIONED},
    }
    if redis_skip is None:
        info["redis_server"] = redis_client(redis_url).info("server")["redis_version"]
    return info


def print_demo_counts(summary: dict) -> None:
    print(
        f"demo counts: raw {summary['raw_events']:,}, valid {summary['valid_events']:,}, "
        f"quarantined {summary['quarantined_events']:,}, online {summary['online_rows']}"
    )


def print_table(rows: list[Row]) -> None:
    header = ("stage", "store", "rows", "seconds", "rows/s", "note")
    cells = [
        (
            row.stage,
            row.store,
            "" if row.rows is None else f"{row.rows:,}",
            "" if row.seconds is None else f"{row.seconds:.2f}",
            "" if row.rows_per_s is None else f"{row.rows_per_s:,.0f}",
            row.note,
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    right = {2, 3, 4}
    print()
    for line in [header, tuple("-" * w for w in widths), *cells]:
        padded = (
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        print("  ".join(padded).rstrip())


def parse_stores(text: str) -> list[str]:
    stores = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(stores) - set(STORES))
    if unknown or not stores:
        raise argparse.ArgumentTypeError(f"expected a comma list of {','.join(STORES)}: {text!r}")
    return stores


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=positive, default=200_000, help="synthetic users to materialize"
    )
    parser.add_argument(
        "--stores", type=parse_stores, default=list(STORES), help="comma list: sqlite,redis"
    )
    parser.add_argument("--skip-demo", action="store_true", help="only measure materialization")
    parser.add_argument("--repeat", type=positive, default=1, help="cold runs of each measurement")
    args = parser.parse_args(argv)
    # Feast and Dagster deprecation notices would bury the progress lines and table.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    started = time.perf_counter()
    source = Settings.from_env()
    redis_skip = redis_unreachable(source.redis_url) if "redis" in args.stores else None
    if redis_skip:
        print(f"redis: skipped: {redis_skip}")

    rows: list[Row] = []
    summaries: list[dict] = []
    try:
        if not args.skip_demo:
            demo_rows, summaries = bench_demo(source, args.repeat)
            rows += demo_rows
            for summary in summaries:
                print_demo_counts(summary)
        with tempfile.TemporaryDirectory(prefix="recloop-bench-marts-") as tmp:
            marts = Path(tmp) / "marts"
            print(f"\nsynthetic marts: {args.rows:,} users, {ITEM_ROWS:,} items, seed {SEED}")
            window, generate_s = timed(lambda: write_marts(marts, args.rows))
            rows.append(Row("generate synthetic marts", "-", args.rows + ITEM_ROWS, generate_s))
            for kind in args.stores:
                if kind == "redis" and redis_skip:
                    rows.append(
                        Row("materialize user_features", kind, None, None, f"skipped: {redis_skip}")
                    )
                    continue
                for rep in range(1, args.repeat + 1):
                    suffix = run_suffix(rep, args.repeat)
                    rows += bench_store(kind, marts, window, args.rows, source.redis_url, suffix)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1

    print_table(rows)
    total_s = time.perf_counter() - started
    report = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "args": {
            "rows": args.rows,
            "stores": args.stores,
            "skip_demo": args.skip_demo,
            "repeat": args.repeat,
        },
        "machine": machine_info(source.redis_url, redis_skip),
        "stores": {
            kind: f"skipped: {redis_skip}" if kind == "redis" and redis_skip else "measured"
            for kind in args.stores
        },
        "results": [row.as_json() for row in rows],
        "demo_summaries": summaries,
        "total_seconds": round(total_s, 2),
    }
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(report, indent=2))
    print(f"\ntotal {total_s:.1f} s; wrote {RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
