"""SAQ, as measured by bench/redis_peers.py."""

from __future__ import annotations

import time
from typing import Any

from common import URL, mark_done, tick, tool
from saq import Queue


async def noop(ctx: Any) -> None:
    tick()


async def sentinel(ctx: Any) -> None:
    mark_done()


queue = Queue.from_url(URL)
settings = {"queue": queue, "functions": [noop, sentinel], "concurrency": 100}


async def enqueue(n: int, bulk: bool = False, sentinel_last: bool = False) -> None:
    q = Queue.from_url(URL)
    for i in range(n):
        await q.enqueue("sentinel" if sentinel_last and i == n - 1 else "noop")
    await q.disconnect()


def worker_cmd() -> list[str]:
    return [tool("saq"), "saq_peer.settings", "--quiet"]


async def roundtrips(n: int) -> list[float]:
    q = Queue.from_url(URL)
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        await q.apply("noop", poll_interval=0.0005)
        latencies.append(time.perf_counter() - started)
    await q.disconnect()
    return latencies
