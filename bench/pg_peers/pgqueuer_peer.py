"""pgqueuer, as measured by bench/postgres_peers.py. Its queue keeps no results, and the status
of a finished job shows only once its log is flushed (about 3 s later): a round trip waits
instead for a Redis key that the job sets (the same side channel as the drain's stamp)."""

from __future__ import annotations

import asyncio
import sys
import time

import psycopg
import redis.asyncio
from common import URL as REDIS_URL
from common import tick
from pgcommon import database_url
from pgqueuer import QueueManager
from pgqueuer.db import PsycopgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries

URL = database_url("pgqueuer")


async def connect() -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(URL, autocommit=True)


async def main() -> QueueManager:
    """The worker's factory (``pgq run pgqueuer_peer:main``)."""
    manager = QueueManager(Queries(PsycopgDriver(await connect())))
    marks = redis.asyncio.Redis.from_url(REDIS_URL)

    @manager.entrypoint("noop")
    async def noop(job: Job) -> None:
        tick()
        if job.payload:  # a round trip: say that it ran
            await marks.set(job.payload.decode(), 1)

    return manager


async def setup() -> None:
    conn = await connect()
    await Queries(PsycopgDriver(conn)).install()
    await conn.close()


async def enqueue(n: int, bulk: bool = False) -> None:
    conn = await connect()
    queries = Queries(PsycopgDriver(conn))
    if bulk:
        for start in range(0, n, 1000):
            size = min(1000, n - start)
            await queries.enqueue(["noop"] * size, [None] * size, [0] * size)
    else:
        for _ in range(n):
            await queries.enqueue("noop", None)
    await conn.close()


def worker_cmd() -> list[str]:
    """Its QueueManager run directly: `pgq run` 1.6.0 fails setting up its logging (the level
    arrives as a string) before it starts."""
    return [sys.executable, "-c", "import asyncio, pgqueuer_peer; asyncio.run(pgqueuer_peer.work())"]


async def work() -> None:
    manager = await main()
    await manager.run(batch_size=100)


async def roundtrips(n: int) -> list[float]:
    conn = await connect()
    queries = Queries(PsycopgDriver(conn))
    marks = redis.asyncio.Redis.from_url(REDIS_URL)
    latencies = []
    for i in range(n):
        key = f"bench:rt:{i}"
        await marks.delete(key)
        started = time.perf_counter()
        await queries.enqueue("noop", key.encode())
        while not await marks.exists(key):
            await asyncio.sleep(0.0005)
        latencies.append(time.perf_counter() - started)
    await marks.aclose()
    await conn.close()
    return latencies
