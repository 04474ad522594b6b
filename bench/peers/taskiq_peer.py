"""taskiq with taskiq-redis, as measured by bench/redis_peers.py."""

from __future__ import annotations

import time

from common import URL, mark_done, tick, tool
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

broker = ListQueueBroker(URL).with_result_backend(RedisAsyncResultBackend(URL))


@broker.task
async def noop() -> None:
    tick()


@broker.task
async def sentinel() -> None:
    mark_done()


async def enqueue(n: int, bulk: bool = False, sentinel_last: bool = False) -> None:
    await broker.startup()
    for i in range(n):
        await (sentinel if sentinel_last and i == n - 1 else noop).kiq()
    await broker.shutdown()


def worker_cmd() -> list[str]:
    return [tool("taskiq"), "worker", "taskiq_peer:broker", "--workers", "1",
            "--max-async-tasks", "100", "--log-level", "WARNING"]


async def roundtrips(n: int) -> list[float]:
    await broker.startup()
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        task = await noop.kiq()
        await task.wait_result(check_interval=0.0005, timeout=10)
        latencies.append(time.perf_counter() - started)
    await broker.shutdown()
    return latencies
