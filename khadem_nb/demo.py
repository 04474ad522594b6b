"""What ``khadem-nb demo`` runs: a batch of real jobs through a worker on the memory driver.

Each job counts the primes below a bound with a sieve. Every tenth job fails on its first
attempt (a simulated transient error) and is retried with exponential backoff; two jobs ask
for a negative bound and end failed, kept with their error, as a user would see them.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, ClassVar, TextIO

from ._terminal import ProgressBar, format_table, metrics_table
from .job import JobStatus, QueueJob
from .manager import QueueManager


class CountPrimes(QueueJob):
    """Count primes below ``bound``; ``flaky`` jobs fail once before succeeding."""

    max_attempts: ClassVar[int] = 3
    retry_delay: ClassVar[float] = 0.02

    def __init__(self, bound: int, flaky: bool = False) -> None:
        self.bound = bound
        self.flaky = flaky

    async def handle(self) -> dict[str, int]:
        if self.bound < 2:
            raise ValueError(f"bound must be at least 2, got {self.bound}")
        if self.flaky and self.attempt == 1:
            raise ConnectionError("simulated transient failure on the first attempt")
        sieve = bytearray([1]) * self.bound
        sieve[0:2] = b"\x00\x00"
        for i in range(2, int(self.bound**0.5) + 1):
            if sieve[i]:
                sieve[i * i :: i] = bytes(len(range(i * i, self.bound, i)))
        return {"bound": self.bound, "primes": sum(sieve)}


async def run_core_demo(
    jobs: int = 300, concurrency: int = 4, stream: TextIO | None = None
) -> dict[str, Any]:
    """Dispatch ``jobs`` prime counts, drain them with a worker, print results and metrics."""
    out = stream or sys.stdout
    manager = await QueueManager({"queue": {"driver": "memory"}}).init()
    for n in range(jobs):
        bound = -1 if n in (jobs // 3, 2 * jobs // 3) else 1_000 + 500 * n
        await manager.dispatch(CountPrimes(bound, flaky=n % 10 == 0))
    bar = ProgressBar(jobs, "primes")
    worker = await manager.start_worker(concurrency=concurrency, delay=0.05, run_in_background=True)
    while (finished := await _finished(manager)) < jobs:
        bar.update(finished, f"retried {manager.get_metrics()['total_retried']}")
        await asyncio.sleep(0.05)
    bar.close(jobs)
    await worker.stop()
    completed = await manager.jobs(JobStatus.COMPLETED)
    failed = await manager.jobs(JobStatus.FAILED)
    out.write(format_table([r.result for r in completed[-5:]]) + "\n\n")
    out.write(format_table([{"job": r.id[:8], "error": r.error} for r in failed]) + "\n\n")
    metrics = manager.get_metrics()
    out.write(metrics_table(metrics) + "\n")
    await manager.close()
    return metrics


async def _finished(manager: QueueManager) -> int:
    counts = await manager.counts()
    return counts["completed"] + counts["failed"]
