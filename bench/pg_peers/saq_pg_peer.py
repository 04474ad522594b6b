"""SAQ's PostgreSQL queue, as measured by bench/postgres_peers.py."""

from __future__ import annotations

from typing import Any

from common import tick, timed_calls, tool
from pgcommon import database_url
from saq import Queue

URL = database_url("saq")


async def noop(ctx: Any) -> None:
    tick()


queue = Queue.from_url(URL)
settings = {"queue": queue, "functions": [noop], "concurrency": 100}


async def setup() -> None:
    q = Queue.from_url(URL)
    await q.connect()  # creates its tables
    await q.disconnect()


async def enqueue(n: int, bulk: bool = False) -> None:
    q = Queue.from_url(URL)
    await q.connect()
    for _ in range(n):
        await q.enqueue("noop")
    await q.disconnect()


def worker_cmd() -> list[str]:
    return [tool("saq"), "saq_pg_peer.settings", "--quiet"]


async def roundtrips(n: int) -> list[float]:
    q = Queue.from_url(URL)
    await q.connect()
    latencies = await timed_calls(n, lambda: q.apply("noop", poll_interval=0.0005))
    await q.disconnect()
    return latencies
