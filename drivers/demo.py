"""`make demo`: fetch MovieLens-100K and materialize the whole graph headlessly.

Runs go to the Dagster instance in $DAGSTER_HOME, so `make dev` afterwards shows
them in the UI. Ends with a human summary and artifacts/demo_summary.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import dagster as dg
import psycopg2
import pyarrow.parquet as pq

from assets.definitions import FEATURES_JOB, TRAINING_JOB, build_definitions
from assets.model_chain import CHECK_OF_GATE, gate_outcome, grouped_outcome
from assets.partitions import TENANTS
from assets.sensors import (
    VALIDATE_CATALOGS_JOB,
    VALIDATE_EVENTS_JOB,
    new_tenants,
    tenant_range_tags,
)
from drivers.dagster_runs import RunOutcome, WorkspaceJobs
from drivers.launcher import PROJECT_ROOT, post_json, serve
from feature_repo.definitions import build_feature_objects
from feature_repo.store import (
    count_online_entities,
    online_store_problem,
    open_feature_store,
)
from recloop.data.ingest import REPORT_FILE, event_partition_counts, pending_event_rows
from recloop.data.layout import DataLayout, parquet_files, write_parquet_atomic
from recloop.data.movielens import (
    MovieLensFrames,
    fetch_recbole_wheel,
    read_ml100k_wheel,
    shift_to_end_before,
    split_users,
    to_raw_log,
    write_raw_log,
)
from recloop.data.samples import BAD_BATCH_NAME, malformed_events
from recloop.registry.model_registry import Registry, model_name
from recloop.settings import DAGSTER_PG_URL_ENV, Settings, SettingsError

DEMO_TENANT = "ml100k"
RAW_ASSET = "raw_events"
LAST_ASSET = "champion_model"


class DemoError(RuntimeError):
    """A demo step failed; the message says which and where to look."""


def lineage_path(asset: str) -> str:
    """The UI page of `asset`'s whole upstream lineage, every node named (the global graph
    opens with its groups collapsed)."""
    return f"/assets/{asset}?view=lineage&lineageScope=upstream&lineageDepth=20"


def lineage(defs: dg.Definitions, source: str = RAW_ASSET, sink: str = LAST_ASSET) -> list[str]:
    """Asset keys on some path from `source` to `sink`, in topological order."""
    graph = defs.resolve_asset_graph()
    between = (
        dg.AssetSelection.assets(source).downstream() & dg.AssetSelection.assets(sink).upstream()
    ).resolve(graph) | {dg.AssetKey(source)}
    return [key.to_user_string() for key in graph.toposorted_asset_keys if key in between]


QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# A workspace run's steps in its own process, not one subprocess per step: on 2 cores,
# each step process's imports (torch, Feast, dbt) cost more than running steps side by
# side gains, and steps that open the DuckDB warehouse run one at a time anyway.
ONE_PROCESS = {"execution": {"config": {"in_process": {}}}}
PARTITION_TAG = "dagster/partition"


class Jobs(Protocol):
    """Runs a job of the code location by name and waits for its outcome."""

    def run(
        self,
        job_name: str,
        run_config: Mapping[str, object] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> RunOutcome: ...


@dataclass
class InProcessJobs:
    """Jobs executed in this process (`execute_in_process`) on `defs`: what the tests and
    `make loop` use, with definitions built from settings they choose. Their runs have
    no code-location origin, so the UI cannot re-execute them; `make demo` launches
    workspace runs instead (drivers.dagster_runs.WorkspaceJobs)."""

    defs: dg.Definitions
    instance: dg.DagsterInstance

    def run(
        self,
        job_name: str,
        run_config: Mapping[str, object] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> RunOutcome:
        tags = dict(tags or {})
        partition = tags.pop(PARTITION_TAG, None)
        result = self.defs.resolve_job_def(job_name).execute_in_process(
            instance=self.instance,
            raise_on_error=False,
            run_config=dict(run_config or {}),
            tags=tags,
            partition_key=partition,
        )
        return RunOutcome(
            run_id=result.run_id,
            status=result.dagster_run.status,
            failures=[
                event.message for event in result.all_events if event.is_failure and event.message
            ],
            failed_checks=[
                evaluation.check_name
                for evaluation in result.get_asset_check_evaluations()
                if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
            ],
        )


def _run(
    jobs: Jobs,
    job_name: str,
    what: str,
    run_config: Mapping[str, object] | None = None,
    tags: Mapping[str, str] | None = None,
) -> None:
    """Run a job quietly; a DemoError naming the run and its last failures if it fails
    or if any of its asset checks does not pass."""
    outcome = jobs.run(job_name, {**QUIET_LOGS, **(run_config or {})}, tags)
    if not outcome.success:
        raise DemoError(
            f"{what} failed (run {outcome.run_id}): " + " | ".join(outcome.failures[-3:])
        )
    if outcome.failed_checks:
        raise DemoError(
            f"{what}: asset checks failed: {outcome.failed_checks} (run {outcome.run_id})"
        )


def inject_malformed_batch(layout: DataLayout, tenant: str) -> int:
    """Add the labelled malformed batch to the tenant's last day, so quarantine has work."""
    last_day = layout.event_days(tenant)[-1]
    partition = layout.raw_events_partition(tenant, last_day)
    first_file = parquet_files(partition)[0]
    existing_id = pq.read_table(first_file, columns=["event_id"]).column(0)[0].as_py()
    batch = malformed_events(tenant, last_day, duplicate_of=existing_id)
    write_parquet_atomic(batch, partition / BAD_BATCH_NAME)
    return len(batch)


# The steps of `make demo` and of `recloop run` (your own data: no download, no service),
# as the progress lines number them.
DEMO_STEPS = ("raw log", "catalogs", "events", "features", "training", "serving", "summary")
RUN_STEPS = ("catalogs", "events", "features", "training", "summary")


def announce(steps: tuple[str, ...], step: str, text: str) -> None:
    print(f"[{steps.index(step) + 1}/{len(steps)}] {text}", flush=True)


def demo_tenants(count: int) -> list[str]:
    """The demo's tenants: `ml100k`, or `ml100k-1` .. `ml100k-<count>`, one per part of
    the users."""
    if count < 1:
        raise DemoError(f"TENANTS must be at least 1, not {count}")
    return [DEMO_TENANT] if count == 1 else [f"{DEMO_TENANT}-{n}" for n in range(1, count + 1)]


def stable_shift(layout: DataLayout, frames: MovieLensFrames, tenant: str) -> timedelta:
    """Whole days that move MovieLens so its last day is yesterday, the first time; the
    same days again once the data directory holds the demo's raw log (a later run must
    rewrite the same partitions, not add a second, shifted copy)."""
    written = layout.event_days(tenant)
    if not written:
        return shift_to_end_before(frames, datetime.now(UTC))
    first = datetime.fromtimestamp(int(frames.ratings["timestamp"].min()), UTC).date()
    return timedelta(days=(written[0] - first).days)


def build_features(
    settings: Settings,
    instance: dg.DagsterInstance,
    shift: timedelta | None = timedelta(0),
    jobs: Jobs | None = None,
    tenants: int = 1,
) -> dg.Definitions:
    """Steps 1-4: raw log (timestamps moved by `shift`; None: `stable_shift`; with
    `tenants` > 1 the users split into that many tenants), validation, dbt and Feast, run
    by `jobs` (default: in this process). Returns the definitions of the code location."""
    layout = DataLayout(settings.data_dir)
    names = demo_tenants(tenants)
    others = sorted(set(layout.tenants()) - set(names))
    if others:
        raise DemoError(
            f"{layout.root} already holds tenants {', '.join(others)} (another TENANTS "
            "setting?): point RECLOOP_DATA_DIR at another directory"
        )
    announce(DEMO_STEPS, "raw log", f"MovieLens-100K -> raw event log under {layout.root / 'raw'}")
    frames = read_ml100k_wheel(fetch_recbole_wheel(layout.cache))
    shift = stable_shift(layout, frames, names[0]) if shift is None else shift
    parts = split_users(frames, tenants) if tenants > 1 else [frames]
    for tenant, part in zip(names, parts, strict=True):
        report = write_raw_log(to_raw_log(part, tenant, shift), layout)
        print(
            f"      {tenant}: {report.events:,} ratings of {len(part.users):,} users, "
            f"{report.first_day} .. {report.last_day}"
        )
    injected = inject_malformed_batch(layout, names[0])
    print(
        f"      + {injected} deliberately malformed events ({BAD_BATCH_NAME}, {names[0]}) "
        "to show quarantine"
    )
    return run_feature_jobs(settings, instance, jobs)


def run_feature_jobs(
    settings: Settings,
    instance: dg.DagsterInstance,
    jobs: Jobs | None = None,
    steps: tuple[str, ...] = DEMO_STEPS,
) -> dg.Definitions:
    """Steps 2-4 on whatever raw log the data directory holds: catalogs and events
    validated per tenant, then dbt and Feast, run by `jobs` (default: in this process).
    Returns the definitions of the code location."""
    layout = DataLayout(settings.data_dir)
    defs = build_definitions(settings)
    jobs = jobs or InProcessJobs(defs, instance)
    tenants = layout.tenants()
    added = new_tenants(instance, tenants)
    if added:
        instance.add_dynamic_partitions(TENANTS.name, added)
    announce(steps, "catalogs", f"tenants: {', '.join(tenants)}; validating catalogs")
    for tenant in tenants:
        _run(jobs, VALIDATE_CATALOGS_JOB, f"catalogs of {tenant}", tags={PARTITION_TAG: tenant})

    for tenant in tenants:
        days = layout.event_days(tenant)
        announce(steps, "events", f"validating {len(days)} daily partitions of {tenant} in one run")
        _run(
            jobs,
            VALIDATE_EVENTS_JOB,
            f"event validation of {tenant}",
            tags=tenant_range_tags(tenant, days),
        )
    announce(
        steps,
        "features",
        "dbt build (staging -> intermediate -> marts), feast apply, materialize online store",
    )
    _run(jobs, FEATURES_JOB, "features")
    return defs


def train_and_promote(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    candidate_config: dict | None = None,
    jobs: Jobs | None = None,
    steps: tuple[str, ...] = DEMO_STEPS,
) -> None:
    """Step 5: text embeddings, PIT training set, candidate, gates, promotion: one run
    per tenant (its partition of the chain), run by `jobs` (default: in this process)."""
    algorithm = defs.resources["recloop"].settings().champion_algorithm
    tenants = instance.get_dynamic_partitions(TENANTS.name)
    announce(
        steps,
        "training",
        f"train the {algorithm} candidate, run the gates, promote it: "
        f"{len(tenants)} tenant{'s' if len(tenants) != 1 else ''}",
    )
    run_config = {"ops": {"model_candidate": {"config": candidate_config or {}}}}
    for tenant in tenants:
        _run(
            jobs or InProcessJobs(defs, instance),
            TRAINING_JOB,
            f"training of {tenant}",
            run_config=run_config,
            tags={PARTITION_TAG: tenant},
        )


def serving_smoke(settings: Settings) -> dict:
    """Step 6: start the service over HTTP, ask each tenant's champion for a known user's
    recommendations, check the answers."""
    announce(DEMO_STEPS, "serving", "start the BentoML service and send a smoke request per tenant")
    registry = Registry.of(settings)
    champions = registry.champions()
    users = {tenant: str(registry.load(v).user_ids[0]) for tenant, v in champions.items()}
    with serve(settings) as url:
        # Dry runs: the smoke requests' impressions would be training data.
        answers = {
            tenant: post_json(
                f"{url}/recommend",
                {"tenant": tenant, "user_id": users[tenant], "k": 10, "dry_run": True},
            )
            for tenant in champions
        }
    smoke_ok = all(
        answer.get("model_version") == champions[tenant]
        and len(answer.get("items", [])) == 10
        and answer.get("fallback") is None
        for tenant, answer in answers.items()
    )
    return {"url": url, "smoke_ok": smoke_ok, "smoke_users": users, "smoke_responses": answers}


def run_demo(
    settings: Settings,
    instance: dg.DagsterInstance,
    artifacts: Path,
    jobs: Jobs | None = None,
    tenants: int = 1,
) -> dict:
    started = time.perf_counter()
    # Moved so that its last day is yesterday: the event partitions hold days that have
    # data, and the online features are fresh, as with a live log.
    defs = build_features(settings, instance, shift=None, jobs=jobs, tenants=tenants)
    train_and_promote(defs, instance, jobs=jobs)
    serving = serving_smoke(settings)
    if not serving["smoke_ok"]:
        raise DemoError(f"a smoke request got an unexpected answer: {serving['smoke_responses']}")
    announce(DEMO_STEPS, "summary", "summary")
    summary = {
        **build_summary(settings, defs, started),
        **model_summary(settings),
        "serving": serving,
    }
    write_summary(summary, artifacts / "demo_summary.json")
    return summary


def run_pipeline(
    settings: Settings, instance: dg.DagsterInstance, artifacts: Path, jobs: Jobs | None = None
) -> dict:
    """`recloop run`: the whole chain (validation, features, online store, training, gates,
    promotion) on whatever raw log the data directory holds, then the demo's summary."""
    started = time.perf_counter()
    layout = DataLayout(settings.data_dir)
    if not layout.tenants():
        raise DemoError(
            f"no raw events under {layout.raw_events}: write them as "
            "raw/events/tenant=<id>/date=<YYYY-MM-DD>/<batch>.parquet, with the catalogs "
            "raw/users/tenant=<id>/<YYYY-MM-DD>.parquet and raw/items/tenant=<id>/<YYYY-MM-DD>"
            '.parquet (README.md, "Your own data"), or run `make demo` for MovieLens-100K'
        )
    defs = run_feature_jobs(settings, instance, jobs, RUN_STEPS)
    train_and_promote(defs, instance, jobs=jobs, steps=RUN_STEPS)
    announce(RUN_STEPS, "summary", "summary")
    summary = {**build_summary(settings, defs, started), **model_summary(settings)}
    write_summary(summary, artifacts / "run_summary.json")
    return summary


def write_summary(summary: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, sort_keys=True))
    print_summary(summary, path)


def build_summary(settings: Settings, defs: dg.Definitions, started: float) -> dict:
    layout = DataLayout(settings.data_dir)
    reasons: Counter[str] = Counter()
    counts = {tenant: Counter() for tenant in layout.tenants()}
    for tenant, mine in counts.items():
        for day in layout.event_days(tenant):
            day_counts = event_partition_counts(layout, tenant, day)
            mine.update(
                read=day_counts.read,
                valid=day_counts.valid,
                quarantined=day_counts.quarantined,
                pending=pending_event_rows(layout, tenant, day),
            )
            report = layout.validated_events_partition(tenant, day) / REPORT_FILE
            if report.exists():
                reasons.update(json.loads(report.read_text())["reasons"])
        mine["raw"] = mine.pop("read", 0) + mine["pending"]
    total = sum(counts.values(), Counter())
    store = open_feature_store(settings)
    objects = build_feature_objects(layout.marts)
    online_rows = {view.name: count_online_entities(store, view) for view in objects.views}
    return {
        "raw_events": total["raw"],
        "valid_events": total["valid"],
        "quarantined_events": total["quarantined"],
        "pending_events": total["pending"],
        "events_by_tenant": {tenant: dict(mine) for tenant, mine in counts.items()},
        "quarantine_reasons": dict(sorted(reasons.items())),
        "tenants": layout.tenants(),
        "lineage": lineage(defs),
        "online_store": settings.online_store,
        "online_rows": online_rows,
        "data_dir": str(layout.root),
        "elapsed_s": round(time.perf_counter() - started, 2),
    }


def model_summary(settings: Settings) -> dict:
    """Every tenant's champion: its version, test metrics, the popularity baseline and the
    gate verdict."""
    registry = Registry.of(settings)
    return {
        "champions": {
            tenant: champion_summary(registry, version)
            for tenant, version in registry.champions().items()
        }
    }


def champion_summary(registry: Registry, version: str) -> dict:
    metadata = registry.metadata(version)
    return {
        "model_version": version,
        "metrics": metadata["metrics"]["all"],
        "metrics_by_segment": metadata["metrics"],
        "baselines": {"popularity": metadata["popularity"]},
        "gate": metadata["gate"],
        "training": {
            "algorithm": model_name(version),
            "cutoffs": metadata["cutoffs"],
            # A two-tower's; the labels-only kinds read no feature service and have no epochs.
            "feature_service": metadata.get("feature_service"),
            "best_epoch": metadata.get("best_epoch"),
            "code_version": metadata["code_version"],
            # What serves, when it is the judged configuration refit on every label.
            "refit": metadata.get("refit"),
        },
    }


def gate_lines(results: list[dict]) -> list[str]:
    """The gates grouped under the asset checks the Dagster UI shows, with the same
    names and outcomes (a check of several gates lists them below it)."""
    lines = []
    for check in dict.fromkeys(CHECK_OF_GATE[str(r["name"])] for r in results):
        mine = [r for r in results if CHECK_OF_GATE[str(r["name"])] == check]
        outcome = grouped_outcome(mine)
        if [r["name"] for r in mine] == [check]:
            lines.append(f"{outcome:<8} {check}: {mine[0]['detail']}")
            continue
        lines.append(f"{outcome:<8} {check}")
        lines += [f"{'':<8}   {gate_outcome(r)} {r['name']}: {r['detail']}" for r in mine]
    return lines


def print_summary(summary: dict, path: Path) -> None:
    print()
    print(f"  raw events          {summary['raw_events']:>10,}  = valid + quarantined + pending")
    print(f"  valid               {summary['valid_events']:>10,}")
    print(
        f"  quarantined         {summary['quarantined_events']:>10,}  rows; the checks they failed:"
    )
    for reason, count in summary["quarantine_reasons"].items():
        print(f"      {count:>4}  {reason}")
    if sum(summary["quarantine_reasons"].values()) > summary["quarantined_events"]:
        print("            (a row that failed several checks counts once under each)")
    print(f"  pending             {summary['pending_events']:>10,}  not validated yet")
    if len(summary["events_by_tenant"]) > 1:
        for tenant, mine in summary["events_by_tenant"].items():
            print(
                f"    {tenant:<18}{mine['raw']:>10,} raw = {mine['valid']:,} valid + "
                f"{mine['quarantined']:,} quarantined + {mine['pending']:,} pending"
            )
    for view, rows in summary["online_rows"].items():
        print(f"  online {view:<13}{rows:>10,} entities ({summary['online_store']})")
    print(f"  lineage             {' -> '.join(summary['lineage'])}")
    for tenant, champion in summary["champions"].items():
        print_champion(tenant, champion, several=len(summary["champions"]) > 1)
    if "serving" in summary:
        serving = summary["serving"]
        print(
            f"  serving smoke       {'ok' if serving['smoke_ok'] else 'FAILED'} ({serving['url']}/recommend)"
        )
    print(f"  elapsed             {summary['elapsed_s']:>10.1f} s")
    print(f"\n  wrote {path}; `make dev` opens the Dagster UI on these runs, the lineage at")
    print(f"  http://127.0.0.1:{os.environ.get('DAGSTER_PORT', '3001')}{lineage_path(LAST_ASSET)}")


def print_champion(tenant: str, champion: dict, several: bool) -> None:
    metrics, popularity = champion["metrics"], champion["baselines"]["popularity"]
    label = f"champion of {tenant}" if several else "champion"
    print(f"  {label:<19} {champion['model_version']}")
    for name in ("ndcg@10", "recall@10", "coverage"):
        print(f"      {name:<14}{metrics[name]:>8.4f}   popularity {popularity[name]:.4f}")
    refit = champion["training"]["refit"]
    if not refit:
        served = "the judged ones"
    elif "epochs" in refit:
        served = f"refit on {refit['examples']:,} labels, {refit['epochs']} epochs"
    else:
        served = f"refit on {refit['labels']:,} labels"
    print(f"  served model        {served} ({champion['training']['algorithm']})")
    gate = champion["gate"]
    print(
        f"  gate                {'passed' if gate['passed'] else 'FAILED'}  (checks as in the UI)"
    )
    for line in gate_lines(gate["results"]):
        print(f"      {line}")


def dagster_database_problem(url: str | None) -> str | None:
    """Why the scale profile's Dagster database cannot be used (None: it answers)."""
    if not url:
        return (
            f"RECLOOP_PROFILE=scale keeps Dagster's runs in PostgreSQL: set {DAGSTER_PG_URL_ENV} "
            "(postgresql://user:password@host:5432/db)"
        )
    try:
        psycopg2.connect(url, connect_timeout=3).close()
    except psycopg2.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0]
        return f"the Dagster database at {DAGSTER_PG_URL_ENV} does not answer: {first_line}"
    return None


def dependency_problem(settings: Settings) -> str | None:
    """What the pipeline needs and does not have, checked before anything runs: with the
    scale profile, its PostgreSQL database; with RECLOOP_ONLINE_STORE=redis, a Redis
    server that answers."""
    if settings.profile == "scale":
        problem = dagster_database_problem(os.environ.get(DAGSTER_PG_URL_ENV))
        if problem is not None:
            return problem
    if settings.online_store != "redis":
        return None
    problem = online_store_problem(open_feature_store(settings))
    if problem is None:
        return None
    return (
        f"{problem.rstrip('.')}. Start Redis (e.g. `redis-server`), point RECLOOP_REDIS_URL at yours "
        f"(now {settings.redis_url}), or unset RECLOOP_ONLINE_STORE to use SQLite"
    )


def launch(run: Callable[[Settings, dg.DagsterInstance, Path, Jobs], dict], artifacts: Path) -> int:
    """Run `run_demo` or `run_pipeline` with workspace runs on $DAGSTER_HOME's instance;
    the exit code, with a one-line error for a failed step."""
    # Library deprecation and beta notices drown the driver's own output (the code server
    # and the runs it starts inherit the environment).
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problem = dependency_problem(settings)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if not os.environ.get("DAGSTER_HOME"):
        print(
            "error: set DAGSTER_HOME to the Dagster instance's directory (the Makefile "
            "sets $RECLOOP_DATA_DIR/dagster_home)",
            file=sys.stderr,
        )
        return 2
    # The code server loads `workspace.yaml` from the repository root and reads the
    # settings from the environment: make them independent of the working directory.
    artifacts = artifacts.resolve()
    os.environ.update(settings.to_env())
    os.chdir(PROJECT_ROOT)
    instance = dg.DagsterInstance.get()
    runs_output = artifacts / RUNS_OUTPUT
    try:
        # Workspace runs, so the UI can re-execute them and list them under their jobs.
        with (
            child_stdout_to(runs_output),
            WorkspaceJobs(instance, PROJECT_ROOT / "workspace.yaml", ONE_PROCESS) as jobs,
        ):
            run(settings, instance, artifacts, jobs)
    except DemoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"the runs' own output: {runs_output}; their logs: `make dev`", file=sys.stderr)
        return 1
    return 0


# What the runs print (dbt's line per model, Feast's banners), beside the summary.
RUNS_OUTPUT = "runs_output.log"


@contextmanager
def child_stdout_to(path: Path) -> Iterator[None]:
    """Point file descriptor 1, which the code server and its runs inherit, at `path`,
    and keep this process's own prints on the terminal: the runs' printed lines belong
    in their compute logs (the UI shows them), not between the driver's steps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    terminal = os.dup(1)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 1)
    own = sys.stdout
    sys.stdout = os.fdopen(os.dup(terminal), "w", buffering=1)
    try:
        yield
    finally:
        sys.stdout.close()
        sys.stdout = own
        os.dup2(terminal, 1)
        os.close(terminal)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument(
        "--tenants",
        type=int,
        default=1,
        help="split MovieLens-100K's users into this many tenants (ml100k-1, ...), each "
        "trained, promoted and served on its own; 1 (default): one tenant, ml100k",
    )
    args = parser.parse_args(argv)
    return launch(functools.partial(run_demo, tenants=args.tenants), args.artifacts)


if __name__ == "__main__":
    sys.exit(main())
