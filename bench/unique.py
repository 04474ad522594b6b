"""What a unique dispatch costs: N jobs with distinct arguments dispatched one at a time, plainly
and with ``unique=True`` (each takes its own lock), on each durable driver; rounds alternate,
medians, the ratio.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 BENCH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\
    python bench/unique.py [--n 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from typing import Any

from khadem_nb import QueueJob, QueueManager


class Point(QueueJob):
    def __init__(self, i: int) -> None:
        self.i = i

    async def handle(self) -> int:
        return self.i


def configs(folder: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {"sqlite": {"driver": "sqlite", "path": f"{folder}/q.db"}}
    if os.environ.get("BENCH_REDIS_URL"):
        found["redis"] = {"url": os.environ["BENCH_REDIS_URL"], "prefix": "bench-unique"}
    if os.environ.get("BENCH_POSTGRES_URL"):
        found["postgres"] = {"url": os.environ["BENCH_POSTGRES_URL"] + "?schema=bench_unique"}
    return found


async def rate(config: dict[str, Any], n: int, unique: bool) -> float:
    manager = await QueueManager({"queue": config}).init()
    await manager.purge()
    started = time.perf_counter()
    for i in range(n):
        if unique:
            await manager.dispatch(Point(i), unique=True)
        else:
            await manager.dispatch(Point(i))
    elapsed = time.perf_counter() - started
    await manager.purge()
    await manager.close()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        drivers = configs(folder)
        results: dict[str, dict[bool, list[float]]] = {d: {False: [], True: []} for d in drivers}
        for _ in range(args.rounds):
            for driver, config in drivers.items():
                for unique in (False, True):
                    results[driver][unique].append(asyncio.run(rate(config, args.n, unique)))
    print(f"n={args.n}, rounds={args.rounds}; medians (dispatches/s, one at a time)")
    print("| driver | plain | unique=True | unique / plain |\n|---|---:|---:|---:|")
    for driver, rates in results.items():
        plain, unique = statistics.median(rates[False]), statistics.median(rates[True])
        print(f"| {driver} | {plain:,.0f} | {unique:,.0f} | {unique / plain:.2f} |")


if __name__ == "__main__":
    main()
