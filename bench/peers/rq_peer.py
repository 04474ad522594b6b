"""RQ, as measured by bench/redis_peers.py (SimpleWorker: no fork per job)."""

from __future__ import annotations

import time

from common import URL, mark_done, tick, tool
from redis import Redis
from rq import Queue


def noop() -> None:
    tick()


def sentinel() -> None:
    mark_done()


def _queue() -> Queue:
    return Queue(connection=Redis.from_url(URL))


async def enqueue(n: int, bulk: bool = False, sentinel_last: bool = False) -> None:
    queue = _queue()
    funcs = [noop] * n
    if sentinel_last:
        funcs[-1] = sentinel
    if bulk:
        for start in range(0, n, 1000):
            queue.enqueue_many([Queue.prepare_data(f) for f in funcs[start : start + 1000]])
    else:
        for f in funcs:
            queue.enqueue(f)


def worker_cmd() -> list[str]:
    return [tool("rq"), "worker", "--url", URL, "-w", "rq.worker.SimpleWorker", "--quiet",
            "default"]


async def roundtrips(n: int) -> list[float]:
    queue = _queue()
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        job = queue.enqueue(noop)
        while job.get_status(refresh=True) != "finished":
            time.sleep(0.0005)
        latencies.append(time.perf_counter() - started)
    return latencies
