"""How Feast should keep tenants apart: composite keys or a project per tenant.

    .venv/bin/python -m bench.tenant_keys [--tenants 4] [--users 25000] [--stores sqlite,redis]

Tenants share user ids (independent customers do), so user "1" of one tenant must never
answer for user "1" of another. Two layouts, each with the user_features schema:

- A, composite keys: one project; the view is keyed on entities `tenant` (tenant_id)
  and `user` (user_id), over one source holding every tenant's rows;
- B, project per tenant: one project per tenant, keyed on `user` alone, each over its
  own tenant's file (a shared source would put every tenant's rows in every project).

For each layout and online store: `materialize` of every tenant (B: one call per tenant,
the sum, plus the fixed cost of one call over an empty window), the online footprint,
`get_online_features(...).to_dict()` latency for 1 and 100 users of one tenant per
request, with every request for the same tenant and with the tenant rotating between
requests (one service serving all tenants), and a check that user "1" of each tenant
reads that tenant's values. The stores use feature_repo's config (SQL registry on a SQLite file,
DuckDB offline store) in a temporary directory; Redis runs in db 15, flushed before and
after. Prints two tables and writes bench/results/tenant_keys.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float64, String

from bench.pipeline import (
    STORES,
    BenchError,
    activity_columns,
    genre_names,
    machine_info,
    parse_stores,
    positive,
    redis_client,
    redis_unreachable,
    timed,
)
from feature_repo.definitions import FEATURE_TTL, activity_fields
from feature_repo.store import count_online_entities, install_monotonic_guard, open_feature_store
from recloop.settings import Settings

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "tenant_keys.json"
# Feast's connection string; db 15 is this benchmark's alone (flushed before and after).
REDIS_CONNECTION = "127.0.0.1:6379,db=15"
SEED = 20240630
VIEW = "user_features"
TENANT_KEY = "tenant_id"
USER_KEY = "user_id"
PROBE_USER = "1"
BATCH = 100
SINGLE_REPS = 300
BATCH_REPS = 100
WARMUP_REPS = 20


@dataclass(frozen=True)
class Layout:
    """One way of keeping tenants apart in Feast."""

    name: str
    composite: bool

    def project(self, tenant: str) -> str:
        return "tenants" if self.composite else f"tenant_{tenant}"


LAYOUTS = (Layout("A composite keys", True), Layout("B project per tenant", False))


@dataclass(frozen=True)
class Materialized:
    """Writing every tenant's rows online with one layout and store."""

    layout: str
    store: str
    rows: int
    calls: int
    seconds: float
    empty_call_s: float  # median of one materialize over an empty window, per call
    online_bytes: int

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


@dataclass(frozen=True)
class Latency:
    """`get_online_features(...).to_dict()` wall time for one request size."""

    layout: str
    store: str
    tenants: str  # "one": every request for the first tenant; "rotating": round robin
    entities: int
    reps: int
    p50_ms: float
    p99_ms: float


@dataclass
class Deployment:
    """The Feast store(s) of one layout, with the way each tenant's users are read."""

    layout: Layout
    stores: dict[str, FeatureStore]  # by tenant; one shared store when composite
    features: list[str]

    def entity_rows(self, tenant: str, users: list[str]) -> list[dict[str, str]]:
        if self.layout.composite:
            return [{TENANT_KEY: tenant, USER_KEY: user} for user in users]
        return [{USER_KEY: user} for user in users]

    def read(self, tenant: str, rows: list[dict[str, str]]) -> dict[str, list]:
        response = self.stores[tenant].get_online_features(features=self.features, entity_rows=rows)
        return response.to_dict()

    def distinct_stores(self) -> list[FeatureStore]:
        return list({id(store): store for store in self.stores.values()}.values())


# --- data ----------------------------------------------------------------------


def tenant_names(count: int) -> list[str]:
    return [f"t{i}" for i in range(count)]


def feature_table(
    rng: np.random.Generator, tenants: list[str], users: int, now: datetime
) -> pa.Table:
    """One row per (tenant, user), user ids "1".."users" in every tenant, stamped in the last day."""
    n = len(tenants) * users
    genres = genre_names()
    affinity = rng.dirichlet(np.ones(len(genres)), n)
    offsets = np.arange(0, n * len(genres) + 1, len(genres), dtype=np.int32)
    ages = rng.integers(0, 86_400_000_000, n).astype("timedelta64[us]")
    stamps = np.datetime64(now.replace(tzinfo=None), "us") - ages
    return pa.table(
        {
            TENANT_KEY: pa.array(np.repeat(tenants, users)),
            USER_KEY: pa.array(np.tile(np.arange(1, users + 1).astype(str), len(tenants))),
            "event_timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC")),
            **activity_columns(rng, n),
            "genre_affinity": pa.ListArray.from_arrays(offsets, pa.array(affinity.ravel())),
            "top_genre": pa.array(np.array(genres)[affinity.argmax(axis=1)]),
        }
    )


def tenant_rows(table: pa.Table, tenant: str) -> pa.Table:
    return table.filter(pc.equal(table[TENANT_KEY], tenant))


def write_sources(table: pa.Table, tenants: list[str], folder: Path) -> dict[str, Path]:
    """A's one file of every tenant (key "*") and B's file per tenant, the same rows."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"*": folder / "all.parquet"}
    pq.write_table(table, paths["*"])
    for tenant in tenants:
        paths[tenant] = folder / f"tenant={tenant}.parquet"
        pq.write_table(tenant_rows(table, tenant), paths[tenant])
    return paths


# --- stores --------------------------------------------------------------------


def feast_objects(layout: Layout, source: Path) -> tuple[list[Entity], FeatureView]:
    """The same view for both layouts; only its entities (and so its online key) differ."""
    user = Entity(name="user", join_keys=[USER_KEY], value_type=ValueType.STRING)
    entities = [user]
    if layout.composite:
        entities.insert(
            0, Entity(name="tenant", join_keys=[TENANT_KEY], value_type=ValueType.STRING)
        )
    view = FeatureView(
        name=VIEW,
        entities=entities,
        ttl=FEATURE_TTL,
        schema=[
            *activity_fields(),
            Field(name="genre_affinity", dtype=Array(Float64)),
            Field(name="top_genre", dtype=String),
        ],
        source=FileSource(
            name=f"{VIEW}_source", path=str(source), timestamp_field="event_timestamp"
        ),
        online=True,
    )
    return entities, view


def deploy(
    layout: Layout, kind: str, data_dir: Path, sources: dict[str, Path], tenants: list[str]
) -> Deployment:
    """Apply the layout's project(s) into one registry and one online store, as production would."""
    stores: dict[str, FeatureStore] = {}
    features: list[str] = []
    for tenant in tenants:
        project = layout.project(tenant)
        if layout.composite and stores:
            stores[tenant] = next(iter(stores.values()))
            continue
        settings = Settings(
            data_dir=data_dir,
            online_store=kind,  # type: ignore[arg-type]
            redis_url=REDIS_CONNECTION,
            feast_project=project,
        )
        store = open_feature_store(settings)
        entities, view = feast_objects(layout, sources["*" if layout.composite else tenant])
        store.apply([*entities, view])
        install_monotonic_guard(store, [view])
        stores[tenant] = store
        features = [f"{VIEW}:{field.name}" for field in view.features]
    return Deployment(layout, stores, features)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Feast prints a banner and a progress bar per materialize call; B makes one per tenant."""
    with (
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        yield


@contextlib.contextmanager
def online_store(kind: str) -> Iterator[Path]:
    """A temporary data directory; for Redis, db 15 empty before and after."""
    client = redis_client(REDIS_CONNECTION) if kind == "redis" else None
    with tempfile.TemporaryDirectory(prefix=f"recloop-bench-tenants-{kind}-") as tmp:
        if client is not None:
            client.flushdb()
        try:
            yield Path(tmp)
        finally:
            if client is not None:
                client.flushdb()


def online_bytes(kind: str, data_dir: Path) -> int:
    """Redis's used memory (the caller subtracts the value before writing) or the SQLite online file's size."""
    if kind == "redis":
        return int(redis_client(REDIS_CONNECTION).info("memory")["used_memory"])
    return (data_dir / "feast" / "online.db").stat().st_size


# --- measurements ----------------------------------------------------------------


def materialize(
    deployment: Deployment, kind: str, data_dir: Path, now: datetime, rows: int
) -> Materialized:
    """Every store: one warm-up and one timed call over an empty window, then the timed write."""
    start, end = now - timedelta(days=2), now + timedelta(seconds=1)
    empty_start, empty_end = now - timedelta(days=10), now - timedelta(days=9)
    stores = deployment.distinct_stores()
    baseline = online_bytes(kind, data_dir) if kind == "redis" else 0
    empty_s: list[float] = []
    write_s = 0.0
    with quiet():
        for store in stores:
            store.materialize(empty_start, empty_end)
            empty_s.append(timed(lambda s=store: s.materialize(empty_start, empty_end))[1])
            write_s += timed(lambda s=store: s.materialize(start, end))[1]
    view = deployment.distinct_stores()[0].get_feature_view(VIEW)
    online = sum(count_online_entities(store, view) for store in stores)
    if online != rows:
        raise BenchError(
            f"{deployment.layout.name}, {kind}: {online:,} rows online, {rows:,} written"
        )
    return Materialized(
        deployment.layout.name,
        kind,
        rows,
        len(stores),
        write_s,
        float(np.median(empty_s)),
        online_bytes(kind, data_dir) - baseline,
    )


def check_isolation(deployment: Deployment, table: pa.Table, tenants: list[str]) -> None:
    """User PROBE_USER of each tenant must read that tenant's row, and the rows must differ."""
    names = [ref.split(":", 1)[1] for ref in deployment.features]
    seen: list[dict] = []
    for tenant in tenants:
        rows = tenant_rows(table, tenant)
        expected = rows.filter(pc.equal(rows[USER_KEY], PROBE_USER)).select(names).to_pylist()[0]
        got = deployment.read(tenant, deployment.entity_rows(tenant, [PROBE_USER]))
        actual = {name: got[name][0] for name in names}
        if actual != expected:
            raise BenchError(
                f"{deployment.layout.name}: user {PROBE_USER} of {tenant} read {actual}, expected {expected}"
            )
        seen.append(actual)
    if len(tenants) > 1 and any(a == b for i, a in enumerate(seen) for b in seen[i + 1 :]):
        raise BenchError("two tenants' probe rows are equal: the check would not catch a mix-up")
    if deployment.layout.composite:
        stranger = deployment.read(
            tenants[0], deployment.entity_rows("no-such-tenant", [PROBE_USER])
        )
        if any(stranger[name][0] is not None for name in names):
            raise BenchError("composite keys: an unknown tenant read another tenant's values")


def request_plan(
    rng: np.random.Generator, tenants: list[str], users: int, size: int, reps: int
) -> list[tuple[str, list[str]]]:
    """Seeded (tenant, users) requests, the tenants in turn; pass one tenant to fix it."""
    return [
        (
            tenants[i % len(tenants)],
            (rng.choice(users, size, replace=False) + 1).astype(str).tolist(),
        )
        for i in range(reps)
    ]


def latency(
    deployment: Deployment, kind: str, mode: str, plan: list[tuple[str, list[str]]], warmup: int
) -> Latency:
    """Percentiles of the requests after the first `warmup` (registry and connection caches warm)."""
    requests = [(tenant, deployment.entity_rows(tenant, users)) for tenant, users in plan]
    wall_ms = [
        timed(lambda t=tenant, r=rows: deployment.read(t, r))[1] * 1e3 for tenant, rows in requests
    ]
    p50, p99 = np.percentile(wall_ms[warmup:], [50, 99])
    size = len(plan[0][1])
    return Latency(
        deployment.layout.name, kind, mode, size, len(plan) - warmup, float(p50), float(p99)
    )


def bench_store(
    kind: str, layout: Layout, table: pa.Table, tenants: list[str], users: int, now: datetime
) -> tuple[Materialized, list[Latency]]:
    """One layout in a fresh registry and online store."""
    print(f"{layout.name}, {kind}: apply, materialize {table.num_rows:,} rows, read")
    with online_store(kind) as data_dir:
        sources = write_sources(table, tenants, data_dir / "marts")
        deployment = deploy(layout, kind, data_dir, sources, tenants)
        written = materialize(deployment, kind, data_dir, now, table.num_rows)
        check_isolation(deployment, table, tenants)
        reads = []
        # Feast 0.67 caches feature resolution process-wide for one registry snapshot at a
        # time (feast.utils._get_cached_request_context): a process switching between
        # projects, each with its own registry cache, may resolve afresh on every request.
        for mode, serving in (("one", tenants[:1]), ("rotating", tenants)):
            for size, reps in ((1, SINGLE_REPS), (BATCH, BATCH_REPS)):
                rng = np.random.default_rng(SEED + size)
                plan = request_plan(rng, serving, users, size, WARMUP_REPS + reps)
                reads.append(latency(deployment, kind, mode, plan, WARMUP_REPS))
    return written, reads


# --- report --------------------------------------------------------------------


def print_table(header: tuple[str, ...], lines: list[tuple[str, ...]], text_columns: int) -> None:
    """The first `text_columns` columns left-aligned, the numbers after them right-aligned."""
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    print()
    for line in [header, tuple("-" * w for w in widths), *lines]:
        cells = (
            c.rjust(w) if i >= text_columns else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        print("  ".join(cells).rstrip())


def print_results(written: list[Materialized], reads: list[Latency]) -> None:
    print_table(
        ("layout", "store", "rows", "calls", "seconds", "rows/s", "empty call s", "online MB"),
        [
            (
                m.layout,
                m.store,
                f"{m.rows:,}",
                str(m.calls),
                f"{m.seconds:.2f}",
                f"{m.rows_per_s:,.0f}",
                f"{m.empty_call_s:.3f}",
                f"{m.online_bytes / 1e6:.1f}",
            )
            for m in written
        ],
        text_columns=2,
    )
    print_table(
        ("layout", "store", "tenants", "entities", "reps", "p50 ms", "p99 ms"),
        [
            (
                r.layout,
                r.store,
                r.tenants,
                str(r.entities),
                str(r.reps),
                f"{r.p50_ms:.2f}",
                f"{r.p99_ms:.2f}",
            )
            for r in reads
        ],
        text_columns=3,
    )


def rounded(record: dict[str, object]) -> dict[str, object]:
    """Milliseconds and seconds to 3 decimals: more is timer noise."""
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in record.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tenants", type=positive, default=4, help="tenants sharing user ids")
    parser.add_argument("--users", type=positive, default=25_000, help="users per tenant (>= 100)")
    parser.add_argument(
        "--stores", type=parse_stores, default=list(STORES), help="comma list: sqlite,redis"
    )
    args = parser.parse_args(argv)
    if args.users < BATCH:
        parser.error(f"--users must be at least {BATCH} (the batch read size)")
    # Feast's deprecation notices would bury the progress lines and tables.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    started = time.perf_counter()
    redis_skip = redis_unreachable(REDIS_CONNECTION) if "redis" in args.stores else None
    stores = [kind for kind in args.stores if not (kind == "redis" and redis_skip)]
    if redis_skip:
        print(f"redis: skipped: {redis_skip}")

    tenants = tenant_names(args.tenants)
    now = datetime.now(UTC).replace(microsecond=0)
    table = feature_table(np.random.default_rng(SEED), tenants, args.users, now)
    print(f"{args.tenants} tenants x {args.users:,} users = {table.num_rows:,} rows, seed {SEED}")
    written: list[Materialized] = []
    reads: list[Latency] = []
    try:
        for kind in stores:
            for layout in LAYOUTS:
                materialized, latencies = bench_store(kind, layout, table, tenants, args.users, now)
                written.append(materialized)
                reads += latencies
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1

    print_results(written, reads)
    total_s = time.perf_counter() - started
    report = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "args": {"tenants": args.tenants, "users": args.users, "stores": args.stores},
        "machine": machine_info(REDIS_CONNECTION, redis_skip),
        "stores": {
            kind: f"skipped: {redis_skip}" if kind not in stores else "measured"
            for kind in args.stores
        },
        "isolation_check": f"user {PROBE_USER} of each tenant read that tenant's row (both layouts)",
        "materialize": [rounded({**asdict(m), "rows_per_s": m.rows_per_s}) for m in written],
        "latency": [rounded(asdict(r)) for r in reads],
        "total_seconds": round(total_s, 2),
    }
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(report, indent=2))
    print(f"\ntotal {total_s:.1f} s; wrote {RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
