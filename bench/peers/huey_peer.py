"""Huey, as measured by bench/redis_peers.py (8 threads, result notification)."""

from __future__ import annotations

import time

from common import URL, mark_done, tick, tool
from huey import RedisHuey

huey = RedisHuey("bench", url=URL, notify_result=True, store_none=True)


@huey.task()
def noop() -> None:
    tick()


@huey.task()
def sentinel() -> None:
    mark_done()


async def enqueue(n: int, bulk: bool = False, sentinel_last: bool = False) -> None:
    for i in range(n):
        (sentinel if sentinel_last and i == n - 1 else noop)()


def worker_cmd() -> list[str]:
    return [tool("huey_consumer"), "huey_peer.huey", "-w", "8", "-k", "thread",
            "-d", "0.001", "-m", "0.01", "-q"]


async def roundtrips(n: int) -> list[float]:
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        noop().get(blocking=True, timeout=10)
        latencies.append(time.perf_counter() - started)
    return latencies
