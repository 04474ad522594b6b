"""Celery, as measured by bench/redis_peers.py (8 threads)."""

from __future__ import annotations

import time

from celery import Celery
from common import URL, mark_done, tick, tool

app = Celery("celery_peer", broker=URL, backend=URL)
app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task
def noop() -> None:
    tick()


@app.task
def sentinel() -> None:
    mark_done()


async def enqueue(n: int, bulk: bool = False, sentinel_last: bool = False) -> None:
    for i in range(n):
        (sentinel if sentinel_last and i == n - 1 else noop).delay()


def worker_cmd() -> list[str]:
    return [tool("celery"), "-A", "celery_peer", "worker", "-c", "8", "-P", "threads",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"]


async def roundtrips(n: int) -> list[float]:
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        noop.delay().get(timeout=10)
        latencies.append(time.perf_counter() - started)
    return latencies
