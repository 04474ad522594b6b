"""khadem_nb's Redis driver side by side with arq, SAQ, RQ, Dramatiq, Huey, Celery and taskiq.

One local Redis (db 9 by default, flushed before each measurement), no-op jobs, and for every
engine, interleaved round by round:

1. enqueue N jobs one call at a time, and in bulk where the library has a bulk call;
2. drain N jobs with one worker process (the library's own worker command): the worker counts
   the no-ops it runs and stamps a key at the N-th. The time is (start -> stamp) for N jobs
   minus the same for a single job, so process start-up is not counted;
3. round trip of ROUNDTRIPS sequential jobs (dispatch, wait for the result), p50 and p99,
   with a worker already running.

Plus the physical limit: redis-py alone pushing N list items and moving/removing them in
pipelines. Peers run as installed by ``pip install -e ".[bench]"`` (Celery separately).

    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 python bench/redis_peers.py [--n 10000] [--rounds 3]
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

import redis

HERE = Path(__file__).parent / "peers"
sys.path.insert(0, str(HERE))
from common import URL, p50_p99_ms, stop, time_to_stamp  # noqa: E402

ENGINES = ["khadem_nb", "arq", "saq", "rq", "dramatiq", "huey", "celery", "taskiq"]
MODULES = {name: f"{name.split('_')[0]}_peer" for name in ENGINES}
BULK = {"khadem_nb", "rq"}


def flush() -> None:
    redis.Redis.from_url(URL).flushdb()


def env() -> dict[str, str]:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "BENCH_REDIS_URL": URL, "PATH": path}


def timed_enqueue(module: Any, n: int, bulk: bool) -> float:
    flush()
    settle_garbage()
    started = time.perf_counter()
    asyncio.run(module.enqueue(n, bulk=bulk))
    return n / (time.perf_counter() - started)


def settle_garbage() -> None:
    """Collect now, so no engine's timed section pays for a full collection of garbage left by
    the engines measured before it in this process (all of them are imported here). Without
    it, bulk enqueue rounds of one engine varied 135k-243k jobs/s."""
    gc.collect()


def time_to_sentinel(module: Any, n: int) -> float:
    """Seconds from starting a worker on n queued no-ops until the n-th has run."""
    flush()
    asyncio.run(module.enqueue(n))
    return time_to_stamp(module.worker_cmd(), env(), HERE, n, module.__name__)


def drain_rate(module: Any, n: int) -> float:
    full = time_to_sentinel(module, n)
    startup = time_to_sentinel(module, 1)
    return (n - 1) / max(1e-6, full - startup)  # n jobs in `full`, 1 of them also in `startup`


def roundtrip(module: Any, count: int) -> tuple[float, float]:
    flush()
    worker = subprocess.Popen(module.worker_cmd(), env=env(), cwd=HERE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        asyncio.run(module.roundtrips(20))  # warm up: worker started, connections open
        settle_garbage()
        latencies = asyncio.run(module.roundtrips(count))
    finally:
        stop(worker)
    return p50_p99_ms(latencies)


def physical_limit(n: int) -> float:
    """redis-py alone: pipelined LPUSH of n items, then LMOVE to a processing list and LREM."""
    flush()
    client = redis.Redis.from_url(URL)
    payload = b'{"job":"noop","args":[]}'
    started = time.perf_counter()
    for start in range(0, n, 1000):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(1000, n - start)):
            pipe.lpush("limit:queue", payload)
        pipe.execute()
    for start in range(0, n, 1000):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(1000, n - start)):
            pipe.lmove("limit:queue", "limit:processing", "RIGHT", "LEFT")
            pipe.lrem("limit:processing", 1, payload)
        pipe.execute()
    return n / (time.perf_counter() - started)


def client_single_rate(n: int) -> float:
    """redis.asyncio alone: n awaited LPUSH calls one at a time, the client's own single-command
    rate (the ceiling of a one-call dispatch)."""
    import redis.asyncio as aioredis

    async def push_all() -> float:
        client = aioredis.Redis.from_url(URL)
        payload = b'{"job":"noop","args":[]}'
        await client.ping()
        started = time.perf_counter()
        for _ in range(n):
            await client.lpush("limit:single", payload)
        elapsed = time.perf_counter() - started
        await client.aclose()
        return n / elapsed

    flush()
    settle_garbage()
    return asyncio.run(push_all())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--roundtrips", type=int, default=300)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--measures", default="enqueue,bulk,drain,roundtrip",
                        help="which of enqueue, bulk, drain, roundtrip to run (default: all)")
    args = parser.parse_args()
    engines = args.engines.split(",")
    measures = set(args.measures.split(","))
    results: dict[str, dict[str, list[float]]] = {e: {} for e in engines}
    limit: list[float] = []
    single: list[float] = []
    for round_no in range(args.rounds):
        for name in engines:
            module = importlib.import_module(MODULES[name])
            row = results[name]
            try:
                if "enqueue" in measures:
                    row.setdefault("enqueue", []).append(timed_enqueue(module, args.n, bulk=False))
                if name in BULK and "bulk" in measures:
                    row.setdefault("bulk", []).append(timed_enqueue(module, args.n, bulk=True))
                if "drain" in measures:
                    row.setdefault("drain", []).append(drain_rate(module, args.n))
                if "roundtrip" in measures:
                    p50, p99 = roundtrip(module, args.roundtrips)
                    row.setdefault("p50", []).append(p50)
                    row.setdefault("p99", []).append(p99)
            except Exception as exc:  # one broken peer must not stop the table
                print(f"round {round_no}: {name} failed: {exc!r}", file=sys.stderr)
            print(f"round {round_no}: {name} {({k: round(v[-1], 2) for k, v in row.items() if v})}",
                  file=sys.stderr, flush=True)
        if "drain" in measures:
            limit.append(physical_limit(args.n))
        if "enqueue" in measures:
            single.append(client_single_rate(args.n))
    flush()
    print_table(results, limit, single, args)


def print_table(results: dict[str, dict[str, list[float]]], limit: list[float], single: list[float],
                args: Any) -> None:
    def med(name: str, key: str) -> float | None:
        values = results[name].get(key)
        return statistics.median(values) if values else None

    peers = [e for e in results if e != "khadem_nb"]
    best = {key: (max if key not in ("p50", "p99") else min)(
        (v for p in peers if (v := med(p, key)) is not None), default=None)
        for key in ("enqueue", "bulk", "drain", "p50", "p99")}
    print(f"N={args.n} no-op jobs, {args.roundtrips} round trips, medians of {args.rounds} rounds, "
          f"Redis {URL}\n")
    print("| engine | enqueue jobs/s | bulk enqueue jobs/s | drain jobs/s (1 process) | round trip p50 ms "
          "| p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in results:
        cells = [_fmt(med(name, k), k) for k in ("enqueue", "bulk", "drain", "p50", "p99")]
        print(f"| {name} | " + " | ".join(cells) + " |")
    limit_cell = f"{statistics.median(limit):,.0f}" if limit else "-"
    single_cell = f"{statistics.median(single):,.0f}" if single else "-"
    print(f"| client limit (redis.asyncio, one awaited LPUSH a job) | {single_cell} | | | | |")
    print(f"| physical limit (redis-py pipelined push+move+remove) | | | {limit_cell} | | |")
    print()
    ours = {k: med("khadem_nb", k) for k in best}
    if ours["enqueue"] and single:
        print(f"- enqueue: khadem_nb / client limit = {ours['enqueue'] / statistics.median(single):.2f}")
    if ours["drain"] and limit:
        print(f"- drain: khadem_nb / physical limit = {ours['drain'] / statistics.median(limit):.2f}")
    for key, label in (("enqueue", "enqueue"), ("bulk", "bulk enqueue"), ("drain", "drain")):
        if ours[key] and best[key]:
            print(f"- {label}: khadem_nb / best peer = {ours[key] / best[key]:.1f}x")
    for key in ("p50", "p99"):
        if ours[key] and best[key]:
            print(f"- round trip {key}: khadem_nb {ours[key]:.2f} ms, best peer {best[key]:.2f} ms")


def _fmt(value: float | None, key: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if key in ("p50", "p99") else f"{value:,.0f}"


if __name__ == "__main__":
    main()
