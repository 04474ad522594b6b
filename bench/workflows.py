"""How soon a reduce starts: N points of a group and one job after all of them (``reduce``),
drained by one worker of 50 consumers. Measured from the last point settling (the latest
``finished_ms`` of the points) to the reduce being claimed (its ``started_ms``) and to its
``handle`` starting (after it has read the N results it is given), on SQLite, Redis and PostgreSQL;
medians of rounds. RQ, where installed (``pip install -e ".[bench]"``), runs the same shape
beside it: no-op jobs and one job ``depends_on`` all of them, a SimpleWorker draining them, at
smaller sizes (``--peer-n``): RQ checks every dependency again as each one finishes.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 \
    BENCH_POSTGRES_URL="postgresql://postgres@127.0.0.1:5432/test?schema=bench_workflows" \
        python bench/workflows.py [--n 10000] [--rounds 5] [--peer-n 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from khadem_nb import QueueJob, QueueManager

HERE = Path(__file__).parent
URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")


class Point(QueueJob):
    def __init__(self, i: int) -> None:
        self.i = i

    async def handle(self) -> int:
        return self.i


class Reduce(QueueJob):
    async def handle(self) -> dict[str, Any]:
        return {"started": time.time(), "count": len(self.upstream or [])}


async def khadem_round(config: dict[str, Any], n: int) -> tuple[float, float, float]:
    """(ms from the last point's settle to the reduce's claim, ... to its handle starting,
    s the whole drain took)."""
    manager = await QueueManager({"queue": config}).init()
    await manager.purge()
    points = await manager.dispatch_many([Point(i) for i in range(n)])
    reduce_id = await manager.reduce(points, Reduce())
    began = time.perf_counter()
    await manager.start_worker(max_jobs=n + 1, concurrency=50)
    drain = time.perf_counter() - began
    last = max(r.finished_ms or 0 for r in await manager.get_jobs(points))
    record = await manager.get_job(reduce_id)
    assert record.result["count"] == n, record
    claimed = (record.started_ms or 0) - last
    started = record.result["started"] * 1000 - last
    await manager.purge()
    await manager.close()
    return float(claimed), started, drain


RQ_SCRIPT = """
import os, sys, time
from redis import Redis
from rq import Queue
from rq.job import Job
sys.path.insert(0, {peers!r})
import rq_workflow
n, url = {n}, {url!r}
conn = Redis.from_url(url)
conn.flushdb()
queue = Queue(connection=conn)
points = [queue.enqueue(rq_workflow.point, i) for i in range(n)]
reduce = queue.enqueue(rq_workflow.reduce_stamp, depends_on=points)
started = time.time()
import subprocess
subprocess.run([sys.executable, "-m", "rq.cli", "worker", "--url", url, "-w", "rq.worker.SimpleWorker",
                "--burst", "--quiet", "default"], check=True, env={{**os.environ, "PYTHONPATH": {peers!r}}})
ended = [j.ended_at.timestamp() for j in Job.fetch_many([p.id for p in points], connection=conn)]
stamp = float(conn.get("bench:reduce_started"))
print(stamp * 1000 - max(ended) * 1000, time.time() - started)
conn.flushdb()
"""


def rq_round(n: int) -> tuple[float, float] | None:
    """(ms from RQ's last point ending to its dependent starting, s the whole drain took);
    ``None`` without RQ."""
    try:
        import rq  # noqa: F401
    except ImportError:
        return None
    code = RQ_SCRIPT.format(peers=str(HERE / "peers"), n=n, url=URL)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    latency, drain = out.stdout.split()
    return float(latency), float(drain)


async def main(n: int, rounds: int, peer_n: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        keep = {"retention": 10 * n}  # the reduce reads every point when it starts
        sqlite = {"driver": "sqlite", "path": f"{folder}/q.db", **keep}
        configs: dict[str, dict[str, Any]] = {"sqlite": sqlite}
        if os.environ.get("BENCH_REDIS_URL"):
            configs["redis"] = {"url": URL, "prefix": "bench-workflows", **keep}
        if os.environ.get("BENCH_POSTGRES_URL"):
            configs["postgres"] = {"url": os.environ["BENCH_POSTGRES_URL"], **keep}
        print(f"n={n}, rounds={rounds}; medians, ms from the last point's settle", flush=True)
        print("| engine | to the reduce's claim | to its code starting | whole drain, s |")
        print("|---|---:|---:|---:|")
        for name, config in configs.items():
            results = [await khadem_round(config, n) for _ in range(rounds)]
            claimed = statistics.median(r[0] for r in results)
            started = statistics.median(r[1] for r in results)
            drain = statistics.median(r[2] for r in results)
            print(f"| khadem_nb {name}, n={n} | {claimed:.1f} | {started:.1f} | {drain:.1f} |", flush=True)
            print(f"  rounds: {', '.join(f'{c:.0f}/{s:.0f}' for c, s, _ in results)}", flush=True)
        for size in sorted({peer_n, min(n, peer_n * 2)}):
            peer = [r for r in (rq_round(size) for _ in range(rounds)) if r is not None]
            if peer:
                latency, drain = statistics.median(r[0] for r in peer), statistics.median(r[1] for r in peer)
                print(f"| rq depends_on, n={size} | - | {latency:.1f} | {drain:.1f} |", flush=True)
                print(f"  rounds: {', '.join(f'{r[0]:.0f}' for r in peer)}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--peer-n", type=int, default=1000,
                        help="points of RQ's group (and twice as many): its release slows with size")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds, args.peer_n))
