"""How long a new tenant waits: from its raw log landing in the data directory to the
first answer by its own champion over HTTP, with the real daemon and service.

    .venv/bin/python -m bench.tenant_discovery [--users-per-tenant N] [--algorithm ease] [--reload-s 1]

MovieLens-100K's users are split in two tenants (`split_users`, the demo's TENANTS=2)
(`--fixture`: the test suite's two small tenants, books and shop):
`ml100k-1` goes through the pipeline in process and is served; then `dagster-daemon`
and the service start, `ml100k-2`'s log and catalogs are written into the raw log, and
/recommend is asked for one of its users every 0.5 s until its champion answers.
Nothing is run by hand in between: `tenant_discovery_sensor` validates the tenant,
`features_automation` rebuilds the features, `first_champion_sensor` trains and promotes,
and the service loads the champion. `--users-per-tenant` keeps the first N users of
each half (a small log). Prints the timeline of the runs and writes
bench/results/tenant_discovery[_<N>users][_<algorithm>].json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.error
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from assets.training import TRAINING_JOB
from bench.tenant_keys import print_table
from drivers.demo import run_feature_jobs, train_and_promote
from drivers.launcher import post_json, run_service
from drivers.loop import DAGSTER_YAML, DaemonOrchestrator
from recloop.data.layout import DataLayout
from recloop.data.movielens import (
    MovieLensFrames,
    RawLog,
    fetch_recbole_wheel,
    read_ml100k_wheel,
    shift_to_end_before,
    split_users,
    to_raw_log,
    write_raw_log,
)
from recloop.registry.model_registry import Registry
from recloop.settings import CHAMPION_ALGORITHMS, DEFAULT_CHAMPION_ALGORITHM, Settings
from tests.two_tenants import tenant_frames

RESULTS = Path(__file__).resolve().parent / "results"
TIMEOUT_S = 1800.0
POLL_S = 0.5


def first_users(frames: MovieLensFrames, count: int) -> MovieLensFrames:
    """The first `count` users by id and their ratings; the whole catalog."""
    users = frames.users.iloc[frames.users["user_id"].astype(int).argsort()].head(count)
    kept = set(users["user_id"])
    return MovieLensFrames(
        ratings=frames.ratings.loc[frames.ratings["user_id"].isin(kept)].reset_index(drop=True),
        users=users.reset_index(drop=True),
        items=frames.items,
    )


def status_of(url: str, body: dict) -> tuple[int, dict]:
    try:
        return 200, post_json(url, body)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def failed_training(instance: dg.DagsterInstance, tenant: str) -> str | None:
    """Why a `train_and_promote` run of `tenant` failed (e.g. its gates), with its id;
    None while none has."""
    runs = instance.get_runs(
        dg.RunsFilter(
            job_name=TRAINING_JOB,
            statuses=[dg.DagsterRunStatus.FAILURE],
            tags={"dagster/partition": tenant},
        )
    )
    if not runs:
        return None
    errors = [
        event.message.splitlines()[0]
        for event in instance.all_logs(runs[0].run_id)
        if event.is_dagster_event and event.dagster_event.is_step_failure and event.message
    ]
    checks = [
        line
        for event in instance.all_logs(runs[0].run_id)
        if event.is_dagster_event and event.dagster_event.is_step_failure
        for line in str(event.dagster_event.step_failure_data.error).splitlines()
        if line.startswith("model_candidate:")
    ]
    return f"run {runs[0].run_id}: {'; '.join(errors + checks)}"


def runs_since(instance: dg.DagsterInstance, since: float) -> list[dict]:
    """Every run created after `since` (epoch seconds): job, partition, trigger, times."""
    rows = []
    for record in instance.get_run_records():
        if record.create_timestamp.timestamp() < since:
            continue
        run = record.dagster_run
        rows.append(
            {
                "job": run.job_name,
                "partition": run.tags.get("dagster/partition")
                or run.tags.get("dagster/asset_partition_range_start", ""),
                "trigger": run.tags.get("dagster/sensor_name", ""),
                "status": run.status.value,
                "created_s": round(record.create_timestamp.timestamp() - since, 1),
                "started_s": round(record.start_time - since, 1) if record.start_time else None,
                "ended_s": round(record.end_time - since, 1) if record.end_time else None,
            }
        )
    return sorted(rows, key=lambda row: row["created_s"])


def movielens_halves(users_per_tenant: int | None) -> tuple[RawLog, RawLog]:
    """MovieLens-100K's users in two tenants, moved so the last day is yesterday."""
    frames = read_ml100k_wheel(fetch_recbole_wheel(Path.home() / ".cache" / "recloop-bench"))
    shift = shift_to_end_before(frames, datetime.now(UTC))
    served, new = split_users(frames, 2)
    if users_per_tenant:
        served, new = first_users(served, users_per_tenant), first_users(new, users_per_tenant)
    return to_raw_log(served, "ml100k-1", shift), to_raw_log(new, "ml100k-2", shift)


def fixture_tenants() -> tuple[RawLog, RawLog]:
    """The test suite's two tenants (tests/two_tenants.py): books served, shop new."""
    return tuple(to_raw_log(tenant_frames(tenant), tenant) for tenant in ("books", "shop"))


def measure(root: Path, logs: tuple[RawLog, RawLog], reload_s: float, algorithm: str) -> dict:
    served, new = logs
    layout = DataLayout(root / "data")
    settings = Settings(data_dir=layout.root, champion_algorithm=algorithm)
    home = layout.root / "dagster"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    instance = dg.DagsterInstance.from_config(str(home))
    write_raw_log(served, layout)
    started = time.perf_counter()
    train_and_promote(run_feature_jobs(settings, instance), instance)
    setup_s = time.perf_counter() - started
    user = str(new.events["user_id"].iloc[0])
    daemon = DaemonOrchestrator(settings, instance, sensors=())
    env = {"RECLOOP_RELOAD_INTERVAL_S": str(reload_s)}
    with run_service(settings, env, "bench-service.log") as server:
        daemon.start()
        try:
            copied_at = time.time()
            write_raw_log(new, layout)
            copy_s = time.time() - copied_at
            body = {"tenant": new.tenant, "user_id": user, "k": 10, "dry_run": True}
            while (reply := status_of(f"{server.url}/recommend", body))[0] != 200:
                daemon.check()
                if failed := failed_training(instance, new.tenant):
                    raise SystemExit(
                        f"{new.tenant} is blocked: its first training failed: {failed}"
                    )
                if time.time() - copied_at > TIMEOUT_S:
                    raise SystemExit(f"{new.tenant} not served after {TIMEOUT_S:.0f} s: {reply}")
                time.sleep(POLL_S)
            served_s = time.time() - copied_at
        finally:
            daemon.stop()
    registry = Registry.of(settings)
    return {
        "served_tenant": served.tenant,
        "new_tenant": new.tenant,
        "users": {log.tenant: len(log.users) for log in logs},
        "events": {log.tenant: len(log.events) for log in logs},
        "algorithm": settings.champion_algorithm,
        "reload_interval_s": reload_s,
        "setup_of_the_served_tenant_s": round(setup_s, 1),
        "copy_s": round(copy_s, 1),
        "copy_to_first_answer_s": round(served_s, 1),
        "first_answer": reply[1]["model_version"],
        "champions": registry.champions(),
        "runs": runs_since(instance, copied_at),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users-per-tenant", type=int, default=None)
    parser.add_argument(
        "--fixture",
        action="store_true",
        help="the test suite's two small tenants (books served, shop new) instead of MovieLens",
    )
    parser.add_argument("--reload-s", type=float, default=2.0)
    parser.add_argument(
        "--algorithm",
        choices=CHAMPION_ALGORITHMS,
        default=DEFAULT_CHAMPION_ALGORITHM,
        help="the champion chain's algorithm (a small log may not pass the gates with another)",
    )
    args = parser.parse_args(argv)
    logs = fixture_tenants() if args.fixture else movielens_halves(args.users_per_tenant)
    with tempfile.TemporaryDirectory(prefix="recloop-discovery-") as tmp:
        report = measure(Path(tmp), logs, args.reload_s, args.algorithm)
    new = report["new_tenant"]
    print(
        f"\n{new}: {report['events'][new]:,} events of {report['users'][new]} users; "
        f"copy -> first answer by its champion ({report['first_answer']}): "
        f"{report['copy_to_first_answer_s']:.1f} s"
    )
    print_table(
        ("job", "partition", "trigger", "status", "created s", "started s", "ended s"),
        [
            (
                r["job"],
                r["partition"],
                r["trigger"],
                r["status"],
                f"{r['created_s']:.1f}",
                "" if r["started_s"] is None else f"{r['started_s']:.1f}",
                "" if r["ended_s"] is None else f"{r['ended_s']:.1f}",
            )
            for r in report["runs"]
        ],
        text_columns=4,
    )
    RESULTS.mkdir(exist_ok=True)
    suffix = "_fixture" if args.fixture else ""
    suffix += f"_{args.users_per_tenant}users" if args.users_per_tenant else ""
    suffix += "" if args.algorithm == DEFAULT_CHAMPION_ALGORITHM else f"_{args.algorithm}"
    path = RESULTS / f"tenant_discovery{suffix}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
