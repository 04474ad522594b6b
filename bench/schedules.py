"""What a schedule costs a worker's drain: N queued no-ops drained by one worker of 50
consumers, with no schedule and with a schedule every second (its worker fires the ticks while
it drains), on Redis and on SQLite; medians of alternating rounds and the ratio.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 python bench/schedules.py [--n 100000] [--rounds 5]
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


class Tick(QueueJob):
    async def handle(self) -> None:
        return None


class Beat(QueueJob):
    async def handle(self) -> None:
        return None


async def drain(config: dict[str, Any], n: int, scheduled: bool) -> float:
    manager = await QueueManager({"queue": config}).init()
    await manager.purge()
    await manager.dispatch_many([Tick() for _ in range(n)])
    if scheduled:
        await manager.schedule(Beat, every=1, id="beat", overlap="allow")
    started = time.perf_counter()
    await manager.start_worker(max_jobs=n, concurrency=50)
    elapsed = time.perf_counter() - started
    await manager.purge()
    await manager.close()
    return n / elapsed


async def main(n: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        configs: dict[str, dict[str, Any]] = {"sqlite": {"driver": "sqlite", "path": f"{folder}/q.db"}}
        if os.environ.get("BENCH_REDIS_URL"):
            configs["redis"] = {"url": os.environ["BENCH_REDIS_URL"], "prefix": "bench-schedules"}
        print(f"n={n}, rounds={rounds}; medians (jobs/s)")
        print("| driver | no schedule | a schedule every second | ratio |")
        print("|---|---:|---:|---:|")
        for name, config in configs.items():
            plain, ticking = [], []
            for _ in range(rounds):
                plain.append(await drain(config, n, False))
                ticking.append(await drain(config, n, True))
            a, b = statistics.median(plain), statistics.median(ticking)
            print(f"| {name} | {a:,.0f} | {b:,.0f} | {b / a:.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds))
