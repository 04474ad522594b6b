"""Dramatiq, as measured by bench/redis_peers.py (1 process x 8 threads)."""

from __future__ import annotations

import time

import dramatiq
from common import URL, mark_done, tick, tool
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

broker = RedisBroker(url=URL)
broker.add_middleware(Results(backend=RedisBackend(url=URL)))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True)
def noop() -> None:
    tick()


@dramatiq.actor
def sentinel() -> None:
    mark_done()


async def enqueue(n: int, bulk: bool = False, sentinel_last: bool = False) -> None:
    for i in range(n):
        (sentinel if sentinel_last and i == n - 1 else noop).send()


def worker_cmd() -> list[str]:
    return [tool("dramatiq"), "dramatiq_peer", "--processes", "1", "--threads", "8"]


async def roundtrips(n: int) -> list[float]:
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        message = noop.send()
        message.get_result(block=True, timeout=10_000)
        latencies.append(time.perf_counter() - started)
    return latencies
