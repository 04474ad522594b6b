"""procrastinate, as measured by bench/postgres_peers.py (it keeps no results: a round trip
waits for the job's status to read succeeded)."""

from __future__ import annotations

import asyncio
import time

from common import tick, tool
from pgcommon import database_url
from procrastinate import App, PsycopgConnector

URL = database_url("procrastinate")
app = App(connector=PsycopgConnector(conninfo=URL))


@app.task(name="noop")
async def noop() -> None:
    tick()


async def setup() -> None:
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def enqueue(n: int, bulk: bool = False) -> None:
    async with app.open_async():
        if bulk:
            for start in range(0, n, 1000):
                await noop.batch_defer_async(*({} for _ in range(min(1000, n - start))))
        else:
            for _ in range(n):
                await noop.defer_async()


def worker_cmd() -> list[str]:
    return [tool("procrastinate"), "--app", "procrastinate_peer.app", "worker", "--concurrency", "100"]


async def roundtrips(n: int) -> list[float]:
    latencies = []
    async with app.open_async():
        for _ in range(n):
            started = time.perf_counter()
            job_id = await noop.defer_async()
            while (await app.job_manager.get_job_status_async(job_id)).value != "succeeded":
                await asyncio.sleep(0.0005)
            latencies.append(time.perf_counter() - started)
    return latencies
