"""`make experiments` / `recloop experiments simulate`: two online tests, end to end.

1. The closed loop's system (drivers/loop.py): MovieLens-100K moved to end yesterday,
   through the pipeline, with a champion; the service starts with an empty experiments
   directory and simulated users (recloop.simulator) send real traffic.
2. The A/B example of the champion's algorithm against popularity
   (experiments/examples/<algorithm>_vs_popularity_ab.yaml, its dates moved to start
   now) is copied into the directory. Nothing else is done by hand: the
   spec sensor asks for the spec's job, which trains, gates and deploys both variants,
   and the service routes requests to them once both are live. The lead time is from
   the copy to the first response the spec routed.
3. After `--sessions-per-test` routed sessions the A/B test is stopped (its `stop` set to
   now) and an interleaving test between the two models the A/B test trained follows:
   the interleaving example with its variants pointing at those versions (`model:`), the
   usual next step after an A/B test, and one that needs no training (lead time again).
4. The traffic is validated, each spec's readout asset is materialized, and the results
   go to artifacts/experiments_readout.json and the `experiments` object of
   artifacts/demo_summary.json.

With `--orchestrator daemon` (default) a real `dagster-daemon` picks the spec up when
it reloads the code location (every 60 s) and runs the sensors; `inline` evaluates the
same sensors in this process (what the test suite uses).
"""

import argparse
import json
import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import yaml

from assets.definitions import build_definitions
from assets.experiments import SPECS_SENSOR
from assets.sensors import new_raw_data_sensor
from drivers.demo import QUIET_LOGS
from drivers.launcher import PROJECT_ROOT, serve
from drivers.loop import (
    DaemonOrchestrator,
    InlineOrchestrator,
    LoopConfig,
    Orchestrator,
    Traffic,
    _wait,
    add_simulation_arguments,
    ctr,
    merge_into_summary,
    prepare,
)
from recloop.data.layout import write_json_atomic
from recloop.experiments import ExperimentSpec, load_spec, readout_asset_key
from recloop.registry.model_registry import Registry
from recloop.settings import DEFAULT_CHAMPION_ALGORITHM, Settings
from recloop.simulator import Population, Scenario

EXAMPLES = PROJECT_ROOT / "experiments" / "examples"
SENSORS = (new_raw_data_sensor.name, SPECS_SENSOR)
# A staged spec runs from a minute ago (clock skew) for a week.
SPEC_DURATION = timedelta(days=7)


@dataclass(frozen=True)
class ExperimentDemoConfig:
    data_dir: Path
    artifacts: Path
    orchestrator: Orchestrator = "daemon"
    scenario: Scenario = "grounded"  # the simulated users (recloop.simulator)
    algorithm: str = DEFAULT_CHAMPION_ALGORITHM  # tested against popularity (examples_for)
    warmup_sessions: int = 300  # champion traffic before the first spec arrives
    sessions_per_test: int = 3_000
    rate: float = 40.0  # sessions per second, all workers together
    seed: int = 0
    tick_s: float = 3.0  # inline orchestrator: seconds between sensor evaluations
    lead_time_limit_s: float = 1_200.0


def examples_for(algorithm: str) -> tuple[Path, Path]:
    """The A/B and interleaving examples that test `algorithm` against popularity."""
    examples = (
        EXAMPLES / f"{algorithm}_vs_popularity_ab.yaml",
        EXAMPLES / f"{algorithm}_vs_popularity_interleaving.yaml",
    )
    missing = [path.name for path in examples if not path.is_file()]
    if missing:
        raise ValueError(
            f"no example experiments for champion algorithm {algorithm!r}: "
            f"{', '.join(missing)} missing from {EXAMPLES}"
        )
    return examples


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def stage_spec(example: Path, directory: Path, start: datetime, stop: datetime) -> Path:
    """Copy a spec into the live directory with its dates moved to [start, stop); written
    under a temporary name and renamed, so the service never reads half a file."""
    text = example.read_text()
    text = re.sub(r"(?m)^start: .*$", f"start: {_stamp(start)}", text)
    text = re.sub(r"(?m)^stop: .*$", f"stop: {_stamp(stop)}", text)
    target = directory / example.name
    staged = directory / f".{example.name}.tmp"
    staged.write_text(text)
    staged.rename(target)
    return target


def stage_interleaving(
    example: Path, directory: Path, versions: dict[str, str], start: datetime, stop: datetime
) -> Path:
    """The interleaving example with its variants replaced by registered versions (variant
    name -> `model:` version) and its dates moved, written into the live directory."""
    spec = yaml.safe_load(example.read_text())
    spec.update(
        description="Which of the models the A/B test trained do returning users prefer?",
        start=_stamp(start),
        stop=_stamp(stop),
        variants={name: {"model": versions[name]} for name in spec["test"]["variants"]},
    )
    target = directory / example.name
    staged = directory / f".{example.name}.tmp"
    staged.write_text(yaml.safe_dump(spec, sort_keys=False))
    staged.rename(target)
    return target


def stop_spec(path: Path, at: datetime) -> None:
    """End a test by setting its `stop` (the spec stays, with its assets and readout)."""
    text = re.sub(r"(?m)^stop: .*$", f"stop: {_stamp(at)}", path.read_text())
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_text(text)
    staged.rename(path)


def materialize_readouts(
    settings: Settings, instance: dg.DagsterInstance, specs: list[ExperimentSpec]
) -> dict[str, dict]:
    """Each spec's readout asset, materialized now; the reports it wrote."""
    defs = build_definitions(settings)
    keys = [dg.AssetKey(list(readout_asset_key(spec))) for spec in specs]
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=instance, asset_selection=keys, run_config=QUIET_LOGS, raise_on_error=False
    )
    if not result.success:
        raise RuntimeError(f"readout run {result.run_id} failed")
    readouts = settings.data_dir / "experiments" / "readouts"
    return {spec.name: json.loads((readouts / f"{spec.name}.json").read_text()) for spec in specs}


def _variant_results(report: dict) -> dict[str, dict]:
    return {
        v["variant"].split(":", 1)[1]: {
            "users": v["users"],
            "impressions": v["impressions"],
            "clicks": v["clicks"],
            "ctr": v["ctr"]["value"],
            "ctr_ci": [v["ctr"]["ci_low"], v["ctr"]["ci_high"]],
        }
        for v in report.get("variants") or []
    }


def summarize(
    specs: list[ExperimentSpec],
    readouts: dict[str, dict],
    lead_times: dict[str, float | None],
    traffic: Traffic,
    now: datetime,
) -> dict:
    """The `experiments` object of the demo summary."""
    tests = {}
    for spec in specs:
        report = readouts[spec.name]
        entry: dict[str, object] = {
            "kind": spec.test.kind,
            "summary": report["summary"],
            "lead_time_s": lead_times.get(spec.name),
            "variants": _variant_results(report),
        }
        if spec.test.kind == "ab":
            entry["comparisons"] = report["comparisons"]
            entry["sample_ratio"] = report["sample_ratio"]
        else:
            preference = report["interleaving"]
            entry["interleaving"] = preference
            entry["winner"] = preference["winner"]
        if report.get("ope"):
            entry["ope"] = report["ope"]
        tests[spec.name] = entry
    sessions = list(traffic.sessions)
    return {
        "scenario": traffic.population.scenario,
        "active": [spec.name for spec in specs if spec.is_active(now)],
        "tests": tests,
        "sessions": len(sessions),
        "failed_requests": len(traffic.failures),
        "failures": traffic.failures[:10],
        "ctr_by_phase": {
            phase: ctr([s for s in sessions if s.phase == phase])
            for phase in dict.fromkeys(s.phase for s in sessions)
        },
        # What the simulated users saw and clicked, by the response's variant: the
        # readouts, computed from the validated log, must count the same.
        "traffic": {
            variant: {
                "sessions": sum(1 for s in sessions if s.variant == variant),
                "impressions": sum(s.impressions for s in sessions if s.variant == variant),
                "clicks": sum(s.clicks for s in sessions if s.variant == variant),
            }
            for variant in sorted({s.variant for s in sessions})
        },
    }


def _routed_since(traffic: Traffic, name: str) -> list[float]:
    """Arrival times of the responses spec `name` routed."""
    return [s.at for s in list(traffic.sessions) if s.variant.startswith(f"{name}:")]


def _run_test(
    name: str, traffic: Traffic, config: ExperimentDemoConfig, check: Callable[[], None]
) -> float | None:
    """Wait until the just-copied spec routes requests (its lead time, None if it never
    did), then for `sessions_per_test` of its sessions."""
    copied = time.time()
    traffic.phase = f"waiting:{name}"
    print(f"experiments: copied {name}.yaml; waiting for training, gates and routing")
    live = _wait(
        lambda: bool(_routed_since(traffic, name)),
        config.lead_time_limit_s,
        f"{name} to serve requests",
        check,
    )
    if not live:
        return None
    lead_time = round(min(_routed_since(traffic, name)) - copied, 1)
    print(f"experiments: {name} live after {lead_time} s")
    traffic.phase = name
    _wait(
        lambda: traffic.count(name) >= config.sessions_per_test,
        3_600,
        f"{config.sessions_per_test} sessions of {name}",
        check,
    )
    return lead_time


def run_experiments(
    config: ExperimentDemoConfig,
    settings: Settings,
    instance: dg.DagsterInstance,
    population: Population,
    consumed: dict[str, set[str]],
) -> dict:
    """Steps 2-4 of the module docstring on a prepared system; returns the summary."""
    ab_example, interleaving_example = examples_for(config.algorithm)
    directory = settings.experiments_dir
    directory.mkdir(parents=True, exist_ok=True)
    orchestrator = (
        InlineOrchestrator(settings, instance, config.tick_s, SENSORS)
        if config.orchestrator == "inline"
        else DaemonOrchestrator(settings, instance, SENSORS[:1])
    )
    traffic_config = LoopConfig(
        data_dir=settings.data_dir, artifacts=config.artifacts, rate=config.rate, seed=config.seed
    )
    lead_times: dict[str, float | None] = {}
    staged: list[Path] = []
    with serve(settings, {"RECLOOP_RELOAD_INTERVAL_S": "1"}) as url:
        traffic = Traffic(
            url, population, traffic_config, consumed, population.drifted_users, phase="champion"
        )
        orchestrator.start()
        traffic.start()
        try:
            _wait(
                lambda: traffic.count() >= config.warmup_sessions,
                600,
                "traffic",
                orchestrator.check,
            )
            now = datetime.now(UTC)
            ab = stage_spec(ab_example, directory, now - timedelta(minutes=1), now + SPEC_DURATION)
            staged.append(ab)
            lead_times[ab.stem] = _run_test(ab.stem, traffic, config, orchestrator.check)
            trained = {
                d.variant: d.version
                for d in Registry.of(settings).deployments()
                if d.experiment == ab.stem
            }
            if lead_times[ab.stem] is not None:
                now = datetime.now(UTC)
                stop_spec(ab, now)
                follow_up = stage_interleaving(
                    interleaving_example,
                    directory,
                    trained,
                    now - timedelta(minutes=1),
                    now + SPEC_DURATION,
                )
                staged.append(follow_up)
                lead_times[follow_up.stem] = _run_test(
                    follow_up.stem, traffic, config, orchestrator.check
                )
        finally:
            traffic.stop()
            orchestrator.stop()
    InlineOrchestrator(settings, instance, config.tick_s, SENSORS[:1]).tick()  # validate the rest
    specs = [load_spec(path) for path in staged]
    readouts = materialize_readouts(settings, instance, specs)
    config.artifacts.mkdir(parents=True, exist_ok=True)
    write_json_atomic(readouts, config.artifacts / "experiments_readout.json")
    return summarize(specs, readouts, lead_times, traffic, datetime.now(UTC))


def _decimal(value: float | None) -> str:
    """A readout number; None where a variant served nobody (a test that never went live)."""
    return "n/a" if value is None else f"{value:.4f}"


def print_experiments(summary: dict) -> None:
    print()
    print(f"  scenario            {summary['scenario']:>10}")
    print(f"  sessions            {summary['sessions']:>10,} ({summary['failed_requests']} failed)")
    for name, test in summary["tests"].items():
        print(f"  {name} ({test['kind']}), live {test['lead_time_s']} s after the copy")
        for variant, result in test["variants"].items():
            low, high = (_decimal(bound) for bound in result["ctr_ci"])
            print(
                f"    {variant:<16} {result['impressions']:>8,} impressions {result['clicks']:>6,} "
                f"clicks  CTR {_decimal(result['ctr'])} [{low}, {high}]"
            )
        print(f"    {test['summary']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="recloop experiments simulate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_simulation_arguments(parser, Path("data") / "experiments-demo")
    parser.add_argument(
        "--sessions-per-test", type=int, default=ExperimentDemoConfig.sessions_per_test
    )
    parser.add_argument("--rate", type=float, default=ExperimentDemoConfig.rate)
    parser.add_argument("--seed", type=int, default=ExperimentDemoConfig.seed)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    config = ExperimentDemoConfig(
        data_dir=args.data_dir,
        artifacts=args.artifacts,
        orchestrator=args.orchestrator,
        scenario=args.scenario,
        algorithm=args.champion_algorithm,
        sessions_per_test=args.sessions_per_test,
        rate=args.rate,
        seed=args.seed,
    )
    try:
        examples_for(config.algorithm)
    except ValueError as error:
        print(f"experiments: {error}")
        return 2
    loop_config = LoopConfig(
        data_dir=config.data_dir,
        artifacts=config.artifacts,
        scenario=config.scenario,
        champion_algorithm=args.champion_algorithm,
        seed=config.seed,
    )
    settings, instance, population, consumed = prepare(loop_config)
    settings = replace(settings, experiments_dir=settings.data_dir / "experiments")
    if Registry.of(settings).deployments():
        print("experiments: this data directory already ran the demo; use a new --data-dir")
        return 2
    summary = run_experiments(config, settings, instance, population, consumed)
    path = merge_into_summary(summary, config.artifacts, key="experiments")
    print_experiments(summary)
    print(f"\n  added `experiments` to {path}")
    return (
        0
        if summary["failed_requests"] == 0
        and all(t["lead_time_s"] is not None for t in summary["tests"].values())
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
