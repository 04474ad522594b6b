"""The dashboard over a big queue: how long its requests take with 1,000,000 finished records.

For SQLite and PostgreSQL: 1,000 jobs of three kinds are run (one in 25 fails), then copied in
SQL into 1,000,000 finished records spread over the last day (a million jobs a day), with 100
jobs left queued and the table analysed, as a queue that size would have been. The dashboard's
app (``create_app``) then answers, in this process through httpx's ASGI transport, each request
ROUNDS times, after the overview's first reading that `khadem-nb dashboard` makes before it
answers (timed apart: it reads the queue names, which later refreshes read again beside them):
the overview (computed afresh each time: counts, throughput over the hour, running jobs,
failures, workers), the first page of jobs, the next page, and searches by status, name
part, error text, argument value and time range. Medians and the slowest, in milliseconds.

    BENCH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\
    python bench/dashboard_scale.py [--records 1000000] [--rounds 5] [--drivers sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from typing import Any

import httpx

from khadem_nb import QueueJob, QueueManager
from khadem_nb.dashboard.app import create_app
from khadem_nb.dashboard.serve import warm
from khadem_nb.drivers._rows import COLUMNS

TEMPLATES = 1000
DAY_MS = 86_400_000


class Train(QueueJob):
    def __init__(self, lr: float, seed: int) -> None:
        self.lr, self.seed = lr, seed

    async def handle(self) -> float:
        if self.seed % 25 == 0:
            raise ValueError(f"loss diverged at lr {self.lr}")
        return self.lr * self.seed


class Evaluate(Train):
    pass


class Export(Train):
    pass


async def fill(manager: QueueManager, records: int) -> None:
    """TEMPLATES jobs run for real, then copied in SQL to ``records`` finished ones."""
    kinds = (Train, Evaluate, Export)
    jobs = [kinds[i % 3](lr=round(0.001 * (i % 50 + 1), 3), seed=i) for i in range(TEMPLATES)]
    await manager.dispatch_many(jobs)
    await manager.start_worker(max_jobs=TEMPLATES, concurrency=50, delay=0.01)
    copies = records // TEMPLATES
    now = int(time.time() * 1000)
    columns = [c for c in COLUMNS if c not in ("id", "created_ms", "started_ms", "finished_ms")]
    listed = ", ".join(columns)
    step = DAY_MS // records
    back = f"(g.n * {TEMPLATES} + t.seq) * {step}"  # how long before now a copy finished
    times = f"{now} - {back} - 5, {now} - {back} - 3, {now} - {back}"
    copied = ", ".join("t." + c for c in columns)
    if manager.settings.url and manager.settings.url.startswith("sqlite"):
        sql = (f"WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {copies}) "
               f"INSERT INTO khadem_jobs (id, created_ms, started_ms, finished_ms, {listed}) "
               f"SELECT t.id || '-' || g.n, {times}, {copied} FROM khadem_jobs t, g "
               "WHERE t.status IN ('completed', 'failed') ORDER BY g.n DESC, t.seq")
        store: Any = manager.driver.store  # type: ignore[attr-defined]
        store.write(lambda conn: conn.execute(sql))
        store.write(lambda conn: conn.execute("ANALYZE"))
    else:
        table = manager.driver.table  # type: ignore[attr-defined]
        sql = (f"INSERT INTO {table} (id, created_ms, started_ms, finished_ms, {listed}) "
               f"SELECT t.id || '-' || g.n, {times}, {copied} FROM {table} t, "
               f"generate_series(1, {copies}) g(n) WHERE t.status IN ('completed', 'failed') "
               "ORDER BY g.n DESC, t.seq")

        async def work(conn: Any) -> None:
            await conn.execute(sql)
            await conn.execute(f"ANALYZE {table}")

        await manager.driver._run(work)  # type: ignore[attr-defined]
    await manager.dispatch_many([Train(lr=0.5, seed=i + 1) for i in range(100)])


REQUESTS = {
    "overview": "/api/overview",
    "first page": "/api/jobs",
    "failed jobs": "/api/jobs?status=failed",
    "name part": "/api/jobs?q=Evalu",
    "error text": "/api/jobs?error=diverged",
    "argument value": "/api/jobs?arg=seed%3D25",
    "last hour": "/api/jobs?since={hour_ago}",
}


async def measure(url: str, records: int, rounds: int) -> dict[str, list[float]]:
    keep_all = "retention=10000000&failed_retention=10000000"
    manager = await QueueManager(f"{url}{'&' if '?' in url else '?'}{keep_all}").init()
    try:
        await manager.driver.purge()
        started = time.perf_counter()
        await fill(manager, records)
        print(f"  filled in {time.perf_counter() - started:.0f} s: {await manager.counts()}", flush=True)
        app = create_app(manager, token="bench-token-" + "x" * 20)
        board = app.state.dashboard
        times: dict[str, list[float]] = {name: [] for name in ["start-up read", *REQUESTS, "next page"]}
        began = time.perf_counter()
        await warm(board.overview)  # as `khadem-nb dashboard` does before it answers
        times["start-up read"].append((time.perf_counter() - began) * 1000)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            for _ in range(rounds):
                for name, path in REQUESTS.items():
                    board.overview.forget()
                    path = path.format(hour_ago=int(time.time() * 1000) - 3_600_000)
                    began = time.perf_counter()
                    answer = await client.get(path)
                    times[name].append((time.perf_counter() - began) * 1000)
                    assert answer.status_code == 200, answer.text
                    if name == "first page":
                        cursor = answer.json()["next"]
                        began = time.perf_counter()
                        assert (await client.get(f"/api/jobs?before={cursor}")).status_code == 200
                        times["next page"].append((time.perf_counter() - began) * 1000)
        return times
    finally:
        await manager.driver.purge()
        await manager.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--drivers", default="sqlite,postgres")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        urls = {"sqlite": f"sqlite:///{folder}/big.db",
                "postgres": os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
                + "?schema=khadem_scale"}
        for driver in args.drivers.split(","):
            print(driver, flush=True)
            times = asyncio.run(measure(urls[driver], args.records, args.rounds))
            rows += [(driver, name, statistics.median(t), max(t)) for name, t in times.items()]
    print(f"\n{args.records:,} finished records, {args.rounds} rounds\n")
    print("| driver | request | median ms | slowest ms |")
    print("|---|---|---:|---:|")
    for driver, name, median, slowest in rows:
        print(f"| {driver} | {name} | {median:.1f} | {slowest:.1f} |")


if __name__ == "__main__":
    main()
