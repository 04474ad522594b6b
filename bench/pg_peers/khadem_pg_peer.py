"""khadem_nb on PostgreSQL, as measured by bench/postgres_peers.py: the Redis peer's jobs and
calls (bench/peers/khadem_peer.py) on a PostgreSQL URL."""

from __future__ import annotations

import khadem_peer
from khadem_peer import Noop, Sentinel  # noqa: F401  (the jobs the worker imports from here)
from pgcommon import database_url

from khadem_nb import QueueManager

URL = database_url("khadem")


async def setup() -> None:
    manager = await QueueManager(URL).init()  # creates the schema
    await manager.close()


async def enqueue(n: int, bulk: bool = False) -> None:
    await khadem_peer.enqueue(n, bulk=bulk, url=URL)


def worker_cmd() -> list[str]:
    return khadem_peer.worker_cmd(URL, "khadem_pg_peer")


async def roundtrips(n: int) -> list[float]:
    return await khadem_peer.roundtrips(n, url=URL)
