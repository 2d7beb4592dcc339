"""Closed-loop HTTP load generator.

`run_load` keeps `concurrency` requests in flight, each worker on its own keep-alive
connection sending the next request as soon as the previous answer is read, and
reports throughput and latency percentiles. With `--serve`, the CLI first starts a
BentoML service through `drivers.launcher.start_bentoml`.

    python -m bench.serve_load http://127.0.0.1:3000/echo -c 1 8 -d 15
    python -m bench.serve_load /echo --serve services.echo:Echo -c 1 8 -d 15

On this 2-core machine the generator (aiohttp on uvloop, one process) reaches about
9,500 req/s at concurrency 8 against a bare uvicorn ASGI echo, so it is not what
limits a BentoML service at 1,000-3,000 req/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from drivers.launcher import start_bentoml

DEFAULT_PAYLOAD = '{"user_id": 1, "k": 10}'


@dataclass
class LoadResult:
    """What one closed-loop run measured (latencies in milliseconds).

    `status_counts` has 0 for requests that got no HTTP answer (connection errors,
    timeouts); `errors` counts those and every answer outside 2xx.
    """

    concurrency: int
    duration_s: float
    requests: int
    errors: int
    status_counts: dict[int, int]
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    # (seconds since the measured window opened, latency ms) of each request slower
    # than `stall_ms`, to tell periodic pauses from random slow requests.
    stalls: list[tuple[float, float]] = field(default_factory=list)

    def row(self) -> str:
        """One line of the results table."""
        return (
            f"c={self.concurrency:<3d} {self.rps:7.0f} req/s  p50 {self.p50_ms:6.2f}  "
            f"p90 {self.p90_ms:6.2f}  p99 {self.p99_ms:7.2f}  max {self.max_ms:7.1f} ms  "
            f"n={self.requests} errors={self.errors} stalls={len(self.stalls)}"
        )


def percentile(sorted_ms: Sequence[float], q: float) -> float:
    """Nearest-rank percentile `q` (0-100] of an ascending sequence; 0.0 when empty."""
    if not sorted_ms:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_ms)))
    return sorted_ms[rank - 1]


async def _run_load(
    url: str,
    payloads: Callable[[int], dict] | Sequence[dict],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    stall_ms: float,
    headers: dict[str, str],
) -> LoadResult:
    if callable(payloads):
        make = payloads

        def body(i: int) -> bytes:
            return json.dumps(make(i)).encode()
    else:
        # Encode a list once, so the generator spends its time on HTTP, not on JSON.
        encoded = [json.dumps(p).encode() for p in payloads]

        def body(i: int) -> bytes:
            return encoded[i % len(encoded)]

    send_headers = {"Content-Type": "application/json", **headers}
    counter = iter(range(sys.maxsize))
    latencies: list[float] = []
    stalls: list[tuple[float, float]] = []
    statuses: Counter[int] = Counter()
    clock = time.perf_counter
    measure_from = clock() + warmup_s
    stop_at = measure_from + duration_s

    async def worker(session: aiohttp.ClientSession) -> None:
        while (t0 := clock()) < stop_at:
            status = 0
            try:
                async with session.post(url, data=body(next(counter)), headers=send_headers) as r:
                    await r.read()
                    status = r.status
            except (aiohttp.ClientError, OSError):  # TimeoutError is an OSError
                pass
            t1 = clock()
            if t0 < measure_from:
                continue
            ms = (t1 - t0) * 1000.0
            latencies.append(ms)
            statuses[status] += 1
            if ms > stall_ms:
                stalls.append((t0 - measure_from, ms))

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=30),
        skip_auto_headers=("User-Agent",),
    ) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    elapsed = max(clock() - measure_from, 1e-9)
    latencies.sort()
    return LoadResult(
        concurrency=concurrency,
        duration_s=elapsed,
        requests=len(latencies),
        errors=sum(n for status, n in statuses.items() if not 200 <= status < 300),
        status_counts=dict(statuses),
        rps=len(latencies) / elapsed,
        p50_ms=percentile(latencies, 50),
        p90_ms=percentile(latencies, 90),
        p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else 0.0,
        stalls=sorted(stalls),
    )


def run_load(
    url: str,
    payloads: Callable[[int], dict] | Sequence[dict],
    concurrency: int,
    duration_s: float,
    warmup_s: float = 2.0,
    *,
    stall_ms: float = 20.0,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """POST JSON to `url` from `concurrency` closed-loop workers for `duration_s`.

    `payloads` is a list cycled through, or a function of the request index. Requests
    started during the first `warmup_s` are sent but not counted; `stall_ms` sets
    which requests `LoadResult.stalls` lists. Runs its own event loop (uvloop when
    installed), so call it from synchronous code.
    """
    coro = _run_load(url, payloads, concurrency, duration_s, warmup_s, stall_ms, headers or {})
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: print one result row per concurrency level."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="full URL, or a path when --serve is given")
    parser.add_argument("--serve", metavar="TARGET", help="start `bentoml serve TARGET` first")
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("-d", "--duration", type=float, default=15.0)
    parser.add_argument("-w", "--warmup", type=float, default=2.0)
    parser.add_argument("--payload", default=DEFAULT_PAYLOAD, help="JSON body to POST")
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--stall-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    payload = json.loads(args.payload)

    def run_all(url: str) -> None:
        for c in args.concurrency:
            result = run_load(
                url,
                [payload],
                c,
                args.duration,
                args.warmup,
                stall_ms=args.stall_ms,
                headers=headers,
            )
            print(result.row(), flush=True)
            if result.stalls:
                shown = " ".join(f"{t:.2f}s:{ms:.0f}ms" for t, ms in result.stalls[:20])
                print(f"  stalls (start:latency): {shown}", flush=True)

    if args.serve:
        with start_bentoml(args.serve) as base_url:
            run_all(base_url + args.url)
    else:
        run_all(args.url)


if __name__ == "__main__":
    main()
