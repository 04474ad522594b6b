"""Queue-wide pause: how soon after ``pause_queue`` returns the last claim happens, with three
``khadem-nb worker --concurrency 8`` processes draining a queue of 50 ms jobs.

Per round: dispatch ``--jobs`` jobs, let the workers drain for a second, pause from this process
and note when ``pause_queue`` returned, wait two seconds, then read every record: the last
claim is the latest ``started_ms``. The lag is last claim minus pause return (negative: every
claim came before the return, as the flag read inside the claim promises; positive: a claim
after it). Then resume, let the queue drain, and go again. Reports the median and the highest
lag over ``--rounds`` rounds per driver.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 BENCH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\
    python bench/pause.py [--rounds 20] [--jobs 400] [--drivers sqlite,file,redis,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from regression import drop_schema, queue_url

from khadem_nb import QueueManager

JOBS = '''
import asyncio
from khadem_nb import QueueJob


class Nap(QueueJob):
    async def handle(self):
        await asyncio.sleep(0.05)
'''


async def one_round(manager: QueueManager, jobs: int) -> float:
    from pausejobs import Nap  # type: ignore[import-not-found]

    ids = await manager.dispatch_many([Nap() for _ in range(jobs)])
    await asyncio.sleep(1.0)
    await manager.pause_queue()
    paused_ms = time.time() * 1000
    await asyncio.sleep(2.0)
    last = max(r.started_ms or 0 for r in await manager.driver.get_many(ids) if r is not None)
    await manager.resume_queue()
    await manager.wait(ids, timeout=300)
    return last - paused_ms


async def measure(url: str, rounds: int, jobs: int, folder: Path) -> list[float]:
    env = {"PYTHONPATH": str(folder)}
    import os

    workers = [subprocess.Popen([sys.executable, "-m", "khadem_nb.cli", "--log-level", "ERROR", "worker",
                                 "--queue-url", url, "--import", "pausejobs", "--concurrency", "8"],
                                env={**os.environ, **env}) for _ in range(3)]
    try:
        async with QueueManager(url) as manager:
            await manager.driver.purge()
            lags = [await one_round(manager, jobs) for _ in range(rounds)]
            await manager.driver.purge()
            return lags
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--drivers", default="sqlite,file,redis,postgres")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="khadem-bench-pause-") as tmp:
        folder = Path(tmp)
        (folder / "pausejobs.py").write_text(JOBS)
        sys.path.insert(0, str(folder))
        print(f"3 workers of concurrency 8, {args.jobs} jobs of 50 ms a round, {args.rounds} rounds")
        print("| driver | last claim after the pause returned: median | highest |")
        print("|---|---:|---:|")
        for driver in args.drivers.split(","):
            url = queue_url(driver, tmp, "pause")
            try:
                lags = asyncio.run(measure(url, args.rounds, args.jobs, folder))
            finally:
                drop_schema(url)
            print(f"| {driver} | {statistics.median(lags):.0f} ms | {max(lags):.0f} ms |", flush=True)


if __name__ == "__main__":
    main()
