"""arq, as measured by bench/redis_peers.py."""

from __future__ import annotations

import time
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings
from common import URL, mark_done, tick, tool


async def noop(ctx: Any) -> None:
    tick()


async def sentinel(ctx: Any) -> None:
    mark_done()


class WorkerSettings:
    functions = [noop, sentinel]
    redis_settings = RedisSettings.from_dsn(URL)
    max_jobs = 100
    poll_delay = 0.001
    keep_result = 60


async def enqueue(n: int, bulk: bool = False, sentinel_last: bool = False) -> None:
    pool = await create_pool(RedisSettings.from_dsn(URL))
    for i in range(n):
        await pool.enqueue_job("sentinel" if sentinel_last and i == n - 1 else "noop")
    await pool.aclose()


def worker_cmd() -> list[str]:
    return [tool("arq"), "arq_peer.WorkerSettings"]


async def roundtrips(n: int) -> list[float]:
    pool = await create_pool(RedisSettings.from_dsn(URL))
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        job = await pool.enqueue_job("noop")
        await job.result(poll_delay=0.0005)  # type: ignore[union-attr]
        latencies.append(time.perf_counter() - started)
    await pool.aclose()
    return latencies
