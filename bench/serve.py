"""Serving latency and throughput: /recommend against a bare BentoML echo endpoint.

    .venv/bin/python -m bench.serve [--duration 15] [--concurrency 1 8]

Needs a champion in $RECLOOP_DATA_DIR (run `make demo` first). Starts the echo
service (services/echo.py), then the recloop service, each alone on the machine,
drives each with a closed-loop client at every concurrency, prints a table and
writes bench/results/serve.json. Goal (issue #3): /recommend p99 <= 25 ms at c=8
and >= 60 % of the echo endpoint's throughput, on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bench.serve_load import LoadResult, run_load
from drivers.launcher import serve, start_bentoml
from recloop.registry.model_registry import Registry
from recloop.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "serve.json"
ECHO_TARGET = "services.echo:Echo"
P99_GOAL_MS = 25.0
THROUGHPUT_GOAL = 0.60


def recommend_payloads(settings: Settings, n: int = 2_000, seed: int = 0) -> list[dict]:
    """Requests for known users (the model path, not the fallback), in a seeded order."""
    registry = Registry.of(settings)
    champion = registry.champion()
    if champion is None:
        raise SystemExit(f"no champion under {registry.root}: run `make demo` first")
    bundle = registry.load(champion)
    known = bundle.user_ids[bundle.model.known_users.numpy()]
    users = np.random.default_rng(seed).choice(known, size=n)
    return [{"user_id": str(user), "k": 10} for user in users]


def measure(
    url: str, payloads: list[dict], levels: list[int], duration_s: float
) -> list[LoadResult]:
    results = []
    for concurrency in levels:
        result = run_load(url, payloads, concurrency, duration_s, warmup_s=2.0)
        print(f"  {url.rsplit('/', 1)[-1]:<10} {result.row()}", flush=True)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    payloads = recommend_payloads(settings)
    print("echo endpoint (framework baseline)")
    with start_bentoml(ECHO_TARGET, {"BENTOML_HOME": str(settings.data_dir / "bentoml")}) as url:
        echo = measure(f"{url}/echo", payloads, args.concurrency, args.duration)
    print("recloop /recommend (Feast online read, user tower, index, filter, impression log)")
    with serve(settings) as url:
        recommend = measure(f"{url}/recommend", payloads, args.concurrency, args.duration)
    rows = []
    for e, r in zip(echo, recommend, strict=True):
        rows.append(
            {
                "concurrency": r.concurrency,
                "echo": asdict(e),
                "recommend": asdict(r),
                "throughput_ratio": r.rps / e.rps if e.rps else 0.0,
                "p99_goal_met": r.p99_ms <= P99_GOAL_MS,
                "throughput_goal_met": r.rps >= THROUGHPUT_GOAL * e.rps,
            }
        )
    print()
    header = f"{'c':>3} {'echo req/s':>11} {'rec req/s':>10} {'ratio':>6} {'echo p50/p99 ms':>16} {'rec p50/p99 ms':>16} {'errors':>7}"
    print(header)
    print("-" * len(header))
    for row in rows:
        e, r = row["echo"], row["recommend"]
        print(
            f"{row['concurrency']:>3} {e['rps']:>11.0f} {r['rps']:>10.0f} {row['throughput_ratio']:>6.2f} "
            f"{e['p50_ms']:>7.2f}/{e['p99_ms']:<8.2f} {r['p50_ms']:>7.2f}/{r['p99_ms']:<8.2f} {r['errors']:>7}"
        )
    report = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "duration_s": args.duration,
        "goals": {"p99_ms_at_c8": P99_GOAL_MS, "throughput_ratio": THROUGHPUT_GOAL},
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {RESULTS}")
    errors = sum(row["recommend"]["errors"] for row in rows)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
