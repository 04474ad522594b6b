"""khadem_nb's PostgreSQL driver side by side with procrastinate, SAQ's Postgres queue and
pgqueuer, on one PostgreSQL server, interleaved round by round.

Each engine works in a database of its own, made afresh (and its schema installed) before each
measurement, with no-op jobs:

1. enqueue N jobs one call at a time, and in bulk where the library has a bulk call;
2. drain N jobs with one worker process (the library's own worker command, 100 at a time):
   the worker counts the no-ops it runs and stamps a Redis key at the N-th (bench/peers/common);
   the time is (start -> stamp) for N jobs minus the same for one job, so start-up is not
   counted;
3. round trip of ROUNDTRIPS sequential jobs (dispatch, wait until done), p50 and p99, with a
   worker already running; an engine without results waits for its job's status instead.

    BENCH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\
    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 python bench/postgres_peers.py [--n 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE / "pg_peers"), str(HERE / "peers")]
from common import p50_p99_ms, stop, time_to_stamp  # noqa: E402
from pgcommon import BASE_URL  # noqa: E402

ENGINES = {"khadem_nb": "khadem_pg_peer", "procrastinate": "procrastinate_peer", "saq": "saq_pg_peer",
           "pgqueuer": "pgqueuer_peer", "ceiling": "ceiling_peer"}
DATABASES = {"khadem_nb": "khadem", "procrastinate": "procrastinate", "saq": "saq", "pgqueuer": "pgqueuer",
             "ceiling": "ceiling"}
BULK = {"khadem_nb", "procrastinate", "pgqueuer", "ceiling"}


def fresh(engine: str, module: Any) -> None:
    """A new database for ``engine``, its schema installed, and the drain stamp cleared."""
    name = f"bench_{DATABASES[engine]}"
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    asyncio.run(module.setup())
    gc.collect()


def env() -> dict[str, str]:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    pythonpath = os.pathsep.join([str(HERE / "pg_peers"), str(HERE / "peers"),
                                  os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": pythonpath, "PATH": path}


def enqueue_rate(engine: str, module: Any, n: int, bulk: bool) -> float:
    fresh(engine, module)
    started = time.perf_counter()
    asyncio.run(module.enqueue(n, bulk=bulk))
    return n / (time.perf_counter() - started)


def time_to_drain(engine: str, module: Any, n: int) -> float:
    """Seconds from starting a worker on n queued no-ops until the n-th has run."""
    fresh(engine, module)
    asyncio.run(module.enqueue(n, bulk=engine in BULK))
    return time_to_stamp(module.worker_cmd(), env(), HERE / "pg_peers", n, engine)


def drain_rate(engine: str, module: Any, n: int) -> float:
    full = time_to_drain(engine, module, n)
    startup = time_to_drain(engine, module, 1)
    return (n - 1) / max(1e-6, full - startup)


def roundtrip(engine: str, module: Any, count: int) -> tuple[float, float]:
    fresh(engine, module)
    worker = subprocess.Popen(module.worker_cmd(), env=env(), cwd=HERE / "pg_peers",
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        asyncio.run(module.roundtrips(20))  # warm up: the worker is up, connections open
        gc.collect()
        latencies = asyncio.run(module.roundtrips(count))
    finally:
        stop(worker)
    return p50_p99_ms(latencies)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--roundtrips", type=int, default=300)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--measures", default="enqueue,bulk,drain,roundtrip")
    args = parser.parse_args()
    engines = args.engines.split(",")
    measures = set(args.measures.split(","))
    modules = {e: importlib.import_module(ENGINES[e]) for e in engines}
    results: dict[str, dict[str, list[float]]] = {e: {} for e in engines}
    for _ in range(args.rounds):
        for engine in engines:
            module, row = modules[engine], results[engine]
            if "enqueue" in measures:
                row.setdefault("enqueue", []).append(enqueue_rate(engine, module, args.n, bulk=False))
            if "bulk" in measures and engine in BULK:
                row.setdefault("bulk", []).append(enqueue_rate(engine, module, args.n, bulk=True))
            if "drain" in measures:
                row.setdefault("drain", []).append(drain_rate(engine, module, args.n))
            if "roundtrip" in measures:
                p50, p99 = roundtrip(engine, module, args.roundtrips)
                row.setdefault("p50", []).append(p50)
                row.setdefault("p99", []).append(p99)
    report(results, args)


def report(results: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> None:
    def median(engine: str, key: str) -> float | None:
        values = results[engine].get(key)
        return statistics.median(values) if values else None

    def cell(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    print(f"n={args.n}, rounds={args.rounds}, round trips={args.roundtrips}; medians")
    print("| engine | enqueue jobs/s | bulk enqueue jobs/s | drain jobs/s | round trip p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for engine in results:
        print(f"| {engine} | {cell(median(engine, 'enqueue'), ',.0f')} "
              f"| {cell(median(engine, 'bulk'), ',.0f')} "
              f"| {cell(median(engine, 'drain'), ',.0f')} | {cell(median(engine, 'p50'), '.2f')} "
              f"| {cell(median(engine, 'p99'), '.2f')} |")
    peers = [e for e in results if e != "khadem_nb"]
    mine = results.get("khadem_nb")
    if mine and peers:
        drains = [d for e in peers if (d := median(e, "drain"))]
        p50s = [p for e in peers if (p := median(e, "p50"))]
        if drains and median("khadem_nb", "drain"):
            print(f"\ndrain: khadem_nb / best peer = {median('khadem_nb', 'drain') / max(drains):.2f}")
        if p50s and median("khadem_nb", "p50"):
            print(f"round trip p50: khadem_nb / best peer = {median('khadem_nb', 'p50') / min(p50s):.2f}")


if __name__ == "__main__":
    main()
