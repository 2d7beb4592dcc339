"""`make bench-scale`: from a synthetic raw log to a promoted model at 100k, 1M and 10M
events, cold, and then one new day.

For each size, in a data directory of its own:

1. `recloop generate`'s log (recloop/data/synthetic.py; 30 days, seeded);
2. cold: catalog and event validation, the features run (dbt build, Feast apply,
   materialization to Redis), then the champion chain (point-in-time training set,
   candidate, gates, promotion) of the `--algorithm` champion;
3. incremental: one more day of `--day-events` events (100k), validated alone, then the
   features run and the chain again.

Every Dagster step's seconds come from the instance's step stats; peak RSS is sampled
every 0.2 s over this process and its children (dbt runs as one) and reported per
stage and per step. The online store is the real Redis on 127.0.0.1:6379, under a Feast
project of the run's own. Prints a table and writes bench/results/scale.json and
bench/results/scale.png (seconds and peak RSS against events).

The goals it reports against: 10M events cold to a promoted model in 30 min with peak
RSS within 8 GiB; one new day (100k events) to a newly promoted model in 2 min;
materialization to Redis at 50k rows/s or more.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import psutil

from assets.definitions import FEATURES_JOB, build_definitions
from assets.sensors import VALIDATE_EVENTS_JOB, tenant_range_tags
from drivers.dagster_runs import RunOutcome
from drivers.demo import (
    QUIET_LOGS,
    DemoError,
    InProcessJobs,
    run_feature_jobs,
    train_and_promote,
)
from recloop.data.layout import DataLayout
from recloop.data.shared_state import redis_client
from recloop.data.synthetic import SyntheticLog, write_synthetic_log
from recloop.registry.model_registry import Registry
from recloop.settings import CHAMPION_ALGORITHMS, Settings

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (100_000, 1_000_000, 10_000_000)
GOALS = {
    "cold_10m_s": 30 * 60,
    "cold_10m_peak_rss_gib": 8.0,
    "incremental_day_s": 120,
    "materialize_rows_per_s": 50_000,
}
REDIS_URL = "127.0.0.1:6379"


class RssSampler:
    """Peak resident memory of this process and its descendants, sampled in a thread."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:  # a child that just exited
                    continue
            self.samples.append((time.time(), total))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float, end: float) -> int:
        inside = [rss for at, rss in self.samples if start <= at <= end]
        return max(inside, default=0)


@dataclass
class Stage:
    size: int
    phase: str  # cold | incremental
    name: str
    seconds: float
    rows: int | None
    peak_rss_mb: float
    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds
    # A training stage's result: the promoted version, or why nothing was promoted.
    outcome: str = ""

    @property
    def rows_per_s(self) -> float | None:
        return self.rows / self.seconds if self.rows and self.seconds > 0 else None


@dataclass
class RecordingJobs(InProcessJobs):
    """Jobs run in this process, remembering each run's outcome."""

    outcomes: list[RunOutcome] = field(default_factory=list)

    def run(self, job_name, run_config=None, tags=None) -> RunOutcome:
        outcome = super().run(job_name, run_config, tags)
        self.outcomes.append(outcome)
        return outcome


def step_seconds(instance: dg.DagsterInstance, outcomes: list[RunOutcome]) -> dict[str, float]:
    """Seconds per step key over the runs (a step of several runs: summed)."""
    seconds: dict[str, float] = {}
    for outcome in outcomes:
        for stat in instance.get_run_step_stats(outcome.run_id):
            if stat.start_time and stat.end_time:
                seconds[stat.step_key] = seconds.get(stat.step_key, 0.0) + (
                    stat.end_time - stat.start_time
                )
    return seconds


def online_rows(instance: dg.DagsterInstance) -> int:
    """Rows the last materialization left in the online store, every view."""
    event = instance.get_latest_materialization_event(dg.AssetKey("feast_online_store"))
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    return sum(int(value.value) for key, value in metadata.items() if key.endswith("_online_rows"))


@dataclass
class Timer:
    """Times stages of one size and phase, with their peak RSS."""

    size: int
    phase: str
    sampler: RssSampler
    stages: list[Stage] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str, rows: int | None = None) -> Iterator[Stage]:
        started = time.time()
        stage = Stage(self.size, self.phase, name, 0.0, rows, 0.0)
        yield stage
        ended = time.time()
        stage.seconds = round(ended - started, 2)
        stage.peak_rss_mb = round(self.sampler.peak(started, ended) / 2**20, 1)
        self.stages.append(stage)
        shown = f"{stage.rows_per_s:,.0f} rows/s" if stage.rows_per_s else ""
        print(
            f"  {self.size:>11,} {self.phase:<11} {name:<22} {stage.seconds:>8.1f} s "
            f"{stage.peak_rss_mb:>8,.0f} MB  {shown}",
            flush=True,
        )


def bench_size(
    size: int, root: Path, algorithm: str, day_events: int, sampler: RssSampler
) -> list[Stage]:
    """One size: generate, cold pipeline, one new day."""
    project = f"scale{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data_dir=root / "data",
        online_store="redis",
        redis_url=REDIS_URL,
        feast_project=project,
        champion_algorithm=algorithm,
        partitions_start=date(2026, 1, 1),
    )
    layout = DataLayout(settings.data_dir)
    log = SyntheticLog(events=size, days=30, first_day=date(2026, 1, 1), seed=size)
    cold = Timer(size, "cold", sampler)
    with cold.stage("generate") as stage:
        report = write_synthetic_log(log, layout)
        stage.rows = report.events
    (root / "dagster").mkdir()
    try:
        with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
            defs = build_definitions(settings)
            jobs = RecordingJobs(defs, instance)
            with cold.stage("validate + features", report.events) as stage:
                run_feature_jobs(settings, instance, jobs)
                stage.steps = step_seconds(instance, jobs.outcomes)
            materialized = online_rows(instance)
            with cold.stage("train + gates + promote") as stage:
                train_stage(stage, defs, instance, jobs, settings, log.tenant)

            incremental = Timer(size, "incremental", sampler)
            new_day = log.first_day + timedelta(days=log.days)
            with incremental.stage("generate") as stage:
                day = write_synthetic_log(log, layout, range(log.days, log.days + 1), day_events)
                stage.rows = day.events
            jobs.outcomes.clear()
            with incremental.stage("validate + features", day.events) as stage:
                validate_new_day(jobs, log.tenant, new_day)
                features = jobs.run(FEATURES_JOB, QUIET_LOGS)
                if not features.success:
                    raise SystemExit(f"features of the new day failed: {features.failures[-3:]}")
                stage.steps = step_seconds(instance, jobs.outcomes)
            with incremental.stage("train + gates + promote") as stage:
                train_stage(stage, defs, instance, jobs, settings, log.tenant)
    finally:
        client = redis_client(REDIS_URL)
        for key in client.scan_iter(match=f"*{project}*", count=10_000):
            client.delete(key)
    stages = cold.stages + incremental.stages
    stages.append(
        Stage(
            size,
            "cold",
            "materialize (in features)",
            round(cold.stages[1].steps.get("feast_online_store", 0.0), 2),
            materialized,
            0.0,
        )
    )
    return stages


def train_stage(
    stage: Stage,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    jobs: RecordingJobs,
    settings: Settings,
    tenant: str,
) -> None:
    """The champion chain; the stage's outcome is the version it promoted, or the gates
    (or the error) that stopped it."""
    before = Registry.of(settings).champion(tenant)
    jobs.outcomes.clear()
    try:
        train_and_promote(defs, instance, jobs=jobs)
    except DemoError as error:
        stage.outcome = f"not promoted: {failed_gates(instance, jobs.outcomes[-1].run_id) or error}"
    else:
        after = Registry.of(settings).champion(tenant)
        stage.outcome = f"promoted {after}" if after != before else "not promoted"
    stage.steps = step_seconds(instance, jobs.outcomes)
    print(f"      {stage.outcome}", flush=True)


def failed_gates(instance: dg.DagsterInstance, run_id: str) -> str:
    """What the run's failed gate checks say (their `detail`)."""
    details = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data
        detail = evaluation.metadata.get("detail")
        if not evaluation.passed and detail and "skipped" not in str(detail.value):
            details.append(str(detail.value))
    return "; ".join(details)


def validate_new_day(jobs: RecordingJobs, tenant: str, day: date) -> None:
    """The new day's partition only, as the new-data sensor asks for it."""
    outcome = jobs.run(VALIDATE_EVENTS_JOB, QUIET_LOGS, tenant_range_tags(tenant, [day]))
    if not outcome.success:
        raise SystemExit(f"validation of {day} failed: {outcome.failures[-3:]}")


def summarize(stages: list[Stage]) -> dict[str, object]:
    """The figures the goals are about, for each size."""
    sizes = sorted({s.size for s in stages})
    out: dict[str, object] = {}
    for size in sizes:
        mine = [s for s in stages if s.size == size]
        cold = [
            s
            for s in mine
            if s.phase == "cold" and s.name in ("validate + features", "train + gates + promote")
        ]
        new = [s for s in mine if s.phase == "incremental" and s.name != "generate"]
        (materialize,) = [s for s in mine if s.name == "materialize (in features)"]
        trained = {s.phase: s.outcome for s in mine if s.name == "train + gates + promote"}
        out[str(size)] = {
            "cold_outcome": trained.get("cold", ""),
            "incremental_outcome": trained.get("incremental", ""),
            "cold_to_promoted_s": round(sum(s.seconds for s in cold), 1),
            "cold_peak_rss_mb": max(s.peak_rss_mb for s in cold),
            "incremental_day_to_promoted_s": round(sum(s.seconds for s in new), 1),
            "materialize_rows_per_s": round(materialize.rows_per_s or 0.0),
        }
    return out


def print_table(stages: list[Stage]) -> None:
    print(
        f"\n{'events':>11}  {'phase':<11} {'stage':<26} {'s':>8} {'rows/s':>10} {'peak RSS MB':>12}"
    )
    for s in stages:
        rate = f"{s.rows_per_s:,.0f}" if s.rows_per_s else "-"
        print(
            f"{s.size:>11,}  {s.phase:<11} {s.name:<26} {s.seconds:>8.1f} {rate:>10} "
            f"{s.peak_rss_mb:>12,.0f}  {s.outcome}"
        )


def plot(stages: list[Stage], summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(int(size) for size in summary)
    figure, (seconds, memory) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (
        ("cold_to_promoted_s", "cold, to a promoted model"),
        ("incremental_day_to_promoted_s", "one new day, to a promoted model"),
    ):
        seconds.plot(sizes, [summary[str(n)][key] for n in sizes], marker="o", label=label)
    seconds.axhline(GOALS["cold_10m_s"], linestyle="--", color="grey", label="goal at 10M: 30 min")
    seconds.axhline(
        GOALS["incremental_day_s"], linestyle=":", color="grey", label="goal for a new day: 2 min"
    )
    seconds.set(xscale="log", yscale="log", xlabel="events", ylabel="seconds")
    seconds.legend(fontsize=8)
    memory.plot(sizes, [summary[str(n)]["cold_peak_rss_mb"] / 1024 for n in sizes], marker="o")
    memory.axhline(
        GOALS["cold_10m_peak_rss_gib"], linestyle="--", color="grey", label="goal: 8 GiB"
    )
    memory.set(xscale="log", xlabel="events", ylabel="peak RSS, GiB (cold)")
    memory.legend(fontsize=8)
    figure.suptitle("recloop: synthetic log to promoted model")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--day-events", type=int, default=100_000)
    parser.add_argument("--algorithm", choices=CHAMPION_ALGORITHMS, default="multi_stage")
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temporary one")
    parser.add_argument("--keep", action="store_true", help="keep each size's data directory")
    args = parser.parse_args(argv)
    redis_client(REDIS_URL).ping()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="recloop-scale-"))
    stages: list[Stage] = []
    print(f"{'events':>13} {'phase':<11} {'stage':<22} {'seconds':>10} {'peak RSS':>11}")
    with RssSampler() as sampler:
        for size in args.sizes:
            root = work / f"events-{size}"
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            stages += bench_size(size, root, args.algorithm, args.day_events, sampler)
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
    summary = summarize(stages)
    print_table(stages)
    print(json.dumps({"summary": summary, "goals": GOALS}, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.json").write_text(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "algorithm": args.algorithm,
                "day_events": args.day_events,
                "goals": GOALS,
                "summary": summary,
                "stages": [{**asdict(s), "rows_per_s": s.rows_per_s} for s in stages],
            },
            indent=2,
        )
    )
    plot(stages, summary, RESULTS / "scale.png")
    print(f"wrote {RESULTS / 'scale.json'} and {RESULTS / 'scale.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
