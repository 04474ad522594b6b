"""khadem_nb on Redis, as measured by bench/redis_peers.py (and, with a PostgreSQL URL, by
bench/postgres_peers.py through bench/pg_peers/khadem_pg_peer.py)."""

from __future__ import annotations

import sys

from common import URL, mark_done, tick, timed_calls

from khadem_nb import QueueJob, QueueManager


class Noop(QueueJob):
    async def handle(self) -> None:
        tick()


class Sentinel(QueueJob):
    async def handle(self) -> None:
        mark_done()


async def enqueue(n: int, bulk: bool = False, sentinel_last: bool = False, url: str = URL) -> None:
    manager = await QueueManager(url).init()
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


def worker_cmd(url: str = URL, module: str = "khadem_peer") -> list[str]:
    return [sys.executable, "-m", "khadem_nb.cli", "--log-level", "WARNING", "worker", "--queue-url", url,
            "--import", module, "--concurrency", "100"]


async def roundtrips(n: int, url: str = URL) -> list[float]:
    """``dispatch_and_wait``: watch settle notices, push, read the record once done."""
    manager = await QueueManager(url).init()
    latencies = await timed_calls(n, lambda: manager.dispatch_and_wait(Noop(), timeout=5))
    await manager.close()
    return latencies
