"""SAQ, as measured by bench/redis_peers.py."""

from __future__ import annotations

from typing import Any

from common import URL, mark_done, tick, timed_calls, tool
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
    latencies = await timed_calls(n, lambda: q.apply("noop", poll_interval=0.0005))
    await q.disconnect()
    return latencies
