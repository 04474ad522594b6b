"""What a claim costs beside many delayed jobs: one process stores DELAYED jobs delayed by an
hour, then QUEUED jobs due now, and claims them all in batches of 50 (``reserve``, as a worker's
fetcher does); the mean milliseconds a claim, per driver.

    BENCH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\
    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 python bench/delayed_claims.py \\
    [--delayed 50000] [--queued 10000] [--drivers postgres,sqlite,file,redis,memory]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

from khadem_nb import QueueJob, QueueManager

BATCH = 50


class Noop(QueueJob):
    async def handle(self) -> None:
        return None


def url_of(driver: str, folder: str) -> str:
    postgres = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    redis = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
    urls = {"postgres": f"{postgres}?schema=khadem_delayed_claims",
            "redis": f"{redis}?prefix=khadem-delayed-claims",
            "sqlite": f"sqlite:///{folder}/q.db", "file": f"file://{folder}/q", "memory": "memory://"}
    return urls[driver]


async def claim_ms(url: str, delayed: int, queued: int) -> float:
    manager = await QueueManager(url).init()
    try:
        await manager.driver.purge()
        for start in range(0, delayed, 1000):
            await manager.dispatch_many([Noop() for _ in range(min(1000, delayed - start))], delay=3600)
        for start in range(0, queued, 1000):
            await manager.dispatch_many([Noop() for _ in range(min(1000, queued - start))])
        claimed, claims = 0, 0
        started = time.perf_counter()
        while claimed < queued:
            claimed += len(await manager.driver.reserve(["default"], BATCH, 0))
            claims += 1
        return (time.perf_counter() - started) / claims * 1000
    finally:
        await manager.driver.purge()
        await manager.close()
        if url.startswith("postgresql"):  # the next measurement makes its schema afresh
            import psycopg

            with psycopg.connect(url.split("?")[0], autocommit=True) as conn:
                conn.execute("DROP SCHEMA IF EXISTS khadem_delayed_claims CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delayed", type=int, default=50_000)
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--drivers", default="postgres,sqlite,file,redis,memory")
    args = parser.parse_args()
    print(f"| driver | ms a claim of {BATCH}, {args.delayed:,} delayed | without delayed jobs |")
    print("|---|---:|---:|")
    for driver in args.drivers.split(","):
        with tempfile.TemporaryDirectory() as folder:
            beside = asyncio.run(claim_ms(url_of(driver, folder), args.delayed, args.queued))
        with tempfile.TemporaryDirectory() as folder:
            alone = asyncio.run(claim_ms(url_of(driver, folder), 0, args.queued))
        print(f"| {driver} | {beside:.2f} | {alone:.2f} |", flush=True)


if __name__ == "__main__":
    main()
