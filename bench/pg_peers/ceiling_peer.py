"""The ceiling of a PostgreSQL queue on this machine, as bench/postgres_peers.py measures it
(``--engines ceiling --measures drain``): no library, only psycopg and the least a durable queue
does. A job is a row; a worker claims up to 100 queued rows in one committed statement
(``FOR UPDATE SKIP LOCKED``), runs them, and marks them done in one more. Two commits a batch,
with the server's default durability (``fsync`` and ``synchronous_commit`` on). Nothing else:
no leases, tokens, retries, results, priorities or notices.
"""

from __future__ import annotations

import asyncio
import sys

import psycopg
from common import tick
from pgcommon import database_url

URL = database_url("ceiling")
BATCH = 100
CLAIM = ("UPDATE jobs SET status = 'active' WHERE id IN (SELECT id FROM jobs WHERE status = 'queued' "
         "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, payload")


async def connect() -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(URL, autocommit=True)


async def setup() -> None:
    async with await connect() as conn:
        await conn.execute("CREATE TABLE jobs (id bigserial PRIMARY KEY, status text NOT NULL, payload text)")
        await conn.execute("CREATE INDEX jobs_queued ON jobs (id) WHERE status = 'queued'")


async def enqueue(n: int, bulk: bool = False) -> None:
    async with await connect() as conn:
        if bulk:
            async with conn.cursor() as cursor, cursor.copy("COPY jobs (status) FROM STDIN") as copy:
                for _ in range(n):
                    await copy.write_row(("queued",))
            return
        for _ in range(n):
            await conn.execute("INSERT INTO jobs (status) VALUES ('queued')")


async def work() -> None:
    async with await connect() as conn:
        while True:
            rows = await (await conn.execute(CLAIM, (BATCH,))).fetchall()
            if not rows:
                await asyncio.sleep(0.01)
                continue
            for _ in rows:
                tick()
            done = [row[0] for row in rows]
            await conn.execute("UPDATE jobs SET status = 'done' WHERE id = ANY(%s)", (done,))


def worker_cmd() -> list[str]:
    return [sys.executable, "-c", "import asyncio, ceiling_peer; asyncio.run(ceiling_peer.work())"]


async def roundtrips(n: int) -> list[float]:
    raise SystemExit("the ceiling measures the drain only: --measures drain")
