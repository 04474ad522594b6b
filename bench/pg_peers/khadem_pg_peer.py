"""khadem_nb on PostgreSQL, as measured by bench/postgres_peers.py."""

from __future__ import annotations

import sys
import time

from common import mark_done, tick
from pgcommon import database_url

from khadem_nb import QueueJob, QueueManager

URL = database_url("khadem")


class Noop(QueueJob):
    async def handle(self) -> None:
        tick()


class Sentinel(QueueJob):
    async def handle(self) -> None:
        mark_done()


async def setup() -> None:
    manager = await QueueManager(URL).init()  # creates the schema
    await manager.close()


async def enqueue(n: int, bulk: bool = False) -> None:
    manager = await QueueManager(URL).init()
    jobs: list[QueueJob] = [Noop() for _ in range(n)]
    if bulk:
        for start in range(0, n, 1000):
            await manager.dispatch_many(jobs[start : start + 1000])
    else:
        for job in jobs:
            await manager.dispatch(job)
    await manager.close()


def worker_cmd() -> list[str]:
    return [sys.executable, "-m", "khadem_nb.cli", "--log-level", "WARNING", "worker", "--queue-url", URL,
            "--import", "khadem_pg_peer", "--concurrency", "100"]


async def roundtrips(n: int) -> list[float]:
    """``dispatch_and_wait``: woken by the worker's settle, then the record is read."""
    manager = await QueueManager(URL).init()
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        await manager.dispatch_and_wait(Noop(), timeout=5)
        latencies.append(time.perf_counter() - started)
    await manager.close()
    return latencies
