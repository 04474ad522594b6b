"""khadem_nb on Redis, as measured by bench/redis_peers.py."""

from __future__ import annotations

import asyncio
import sys
import time

from common import URL, mark_done, tick

from khadem_nb import QueueJob, QueueManager


class Noop(QueueJob):
    async def handle(self) -> None:
        tick()


class Sentinel(QueueJob):
    async def handle(self) -> None:
        mark_done()


async def enqueue(n: int, bulk: bool = False, sentinel_last: bool = False) -> None:
    manager = await QueueManager(URL).init()
    jobs: list[QueueJob] = [Noop() for _ in range(n)]
    if sentinel_last:
        jobs[-1] = Sentinel()
    if bulk:
        for start in range(0, n, 1000):
            await manager.dispatch_many(jobs[start : start + 1000])
    else:
        for job in jobs:
            await manager.dispatch(job)
    await manager.close()


def worker_cmd() -> list[str]:
    return [sys.executable, "-m", "khadem_nb.cli", "--log-level", "WARNING", "worker", "--queue-url", URL,
            "--import", "khadem_peer", "--concurrency", "100"]


async def roundtrips(n: int) -> list[float]:
    """Dispatch, then wait for the settle notification (pub/sub), then read the record."""
    manager = await QueueManager(URL).init()
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        record = manager.build_record(Noop())
        settled = asyncio.Event()
        unwatch = await manager.driver.watch([record.id], settled)
        await manager.push([record])
        while (await manager.driver.get(record.id)).status.value != "completed":  # type: ignore[union-attr]
            await asyncio.wait_for(settled.wait(), 5)
            settled.clear()
        unwatch()
        latencies.append(time.perf_counter() - started)
    await manager.close()
    return latencies
