"""Control: abort latency, bulk cancel, and the cost of process isolation.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 python bench/control.py

- abort: an async job runs in a ``khadem-nb worker`` process; the time from ``cancel()``
  returning here to the worker confirming that the job stopped (the record's finish time,
  written by the worker's stop), p50 and p99 of ``--aborts`` cancels, on Redis and SQLite;
- cancel: one ``cancel()`` call on ``--n`` queued jobs, median of ``--rounds``;
- isolation: seconds a job of a one-consumer worker on the memory queue, for a no-op and a
  10 ms sync job, on a thread and in an isolated process (the pool warmed first).
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
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from khadem_nb import JobStatus, QueueJob, QueueManager

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")


class Idle(QueueJob):
    async def handle(self) -> None:
        return None


class Nap(QueueJob):
    """A sync job of ``seconds`` (0: a no-op), on a thread or isolated per ``isolated``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def handle(self) -> None:
        if self.seconds:
            time.sleep(self.seconds)


class IsolatedNap(Nap):
    isolation: ClassVar[str | None] = "process"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def abort_latency(url: str, count: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent / "tests"), os.environ.get("PYTHONPATH", "")])}
    worker = subprocess.Popen([sys.executable, "-m", "khadem_nb.cli", "--log-level", "WARNING", "worker",
                               "--queue-url", url, "--import", "jobs", "--concurrency", "2"], env=env)
    manager = await QueueManager(url).init()
    from jobs import Sleep

    latencies = []
    try:
        for _ in range(count):
            job_id = await manager.dispatch(Sleep(60))
            while (await manager.statuses([job_id]))[0] is not JobStatus.ACTIVE:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.02)
            await manager.cancel(job_id)
            returned_ms = time.time() * 1000
            while (record := await manager.get_job(job_id)).token is not None:
                await asyncio.sleep(0.002)
            latencies.append(max(0.0, (record.finished_ms or 0) - returned_ms))
    finally:
        worker.terminate()
        worker.wait(30)
        await manager.purge()
        await manager.close()
    return {"p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
            "max_ms": max(latencies)}


async def bulk_cancel(url: str, n: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        manager = await QueueManager(url).init()
        await manager.purge()
        ids = await manager.dispatch_many([Idle() for _ in range(n)])
        started = time.perf_counter()
        cancelled = await manager.cancel(ids)
        times.append(time.perf_counter() - started)
        assert len(cancelled) == n
        await manager.purge()
        await manager.close()
    return statistics.median(times)


async def per_job(job: QueueJob, n: int) -> float:
    manager = await QueueManager("memory://").init()
    await manager.dispatch(job)
    await manager.start_worker(max_jobs=1, delay=0.01)  # warms the pool of an isolated job
    await manager.dispatch_many([job for _ in range(n)])
    started = time.perf_counter()
    await manager.start_worker(max_jobs=n, delay=0.01)
    elapsed = time.perf_counter() - started
    await manager.close()
    return elapsed / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--aborts", type=int, default=50)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=300)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="khadem-bench-")
    urls = {"redis": f"{REDIS_URL}?prefix=khadem-bench-control", "sqlite": f"sqlite:///{folder}/q.db"}
    rows: list[dict[str, Any]] = []
    for name, url in urls.items():
        latency = asyncio.run(abort_latency(url, args.aborts))
        seconds = asyncio.run(bulk_cancel(url, args.n, args.rounds))
        rows.append({"driver": name, **latency, "cancel_n_s": seconds})
    print("| driver | abort p50 ms | abort p99 ms | abort max ms | cancel "
          f"{args.n:,} queued, s |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['driver']} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['max_ms']:.1f} | "
              f"{row['cancel_n_s']:.3f} |")
    print()
    print("| job | thread, ms a job | isolated process, ms a job | overhead, ms |")
    print("|---|---:|---:|---:|")
    for label, seconds in (("no-op", 0.0), ("10 ms", 0.01)):
        n = args.jobs if not seconds else max(50, args.jobs // 4)
        thread = statistics.median(asyncio.run(per_job(Nap(seconds), n)) for _ in range(args.rounds))
        isolated = statistics.median(asyncio.run(per_job(IsolatedNap(seconds), n))
                                     for _ in range(args.rounds))
        print(f"| {label} | {thread * 1000:.3f} | {isolated * 1000:.3f} | {(isolated - thread) * 1000:.3f} |")


if __name__ == "__main__":
    main()
