"""SAQ's PostgreSQL queue, as measured by bench/postgres_peers.py."""

from __future__ import annotations

import time
from typing import Any

from common import tick, tool
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
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        await q.apply("noop", poll_interval=0.0005)
        latencies.append(time.perf_counter() - started)
    await q.disconnect()
    return latencies
