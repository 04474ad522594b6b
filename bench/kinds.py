"""Mixed fleets: two workers with disjoint job kinds sharing a queue, against each alone.

Per driver and round: ``--jobs`` no-ops, half of kind ``Left`` and half of kind ``Right``
interleaved, stored with one bulk dispatch; then two ``khadem-nb worker --burst --concurrency
50`` processes, one importing only ``Left``, the other only ``Right``, drain the queue (every
claim of each is filtered to its kind). Each worker's rate is its half over the span from its
first job's start to its last job's end, read from the records. Against it: the same worker
alone on a queue holding only its own half (its claims need no filter). The ratio shared /
alone says what sharing a queue with a worker of other kinds costs each worker. Medians of
``--rounds`` rounds, the two set-ups alternating.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 BENCH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\
    python bench/kinds.py [--rounds 3] [--jobs 10000] [--drivers sqlite,file,redis,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from regression import drop_schema, queue_url

from khadem_nb import QueueManager

LEFT = '''
from khadem_nb import QueueJob


class Left(QueueJob):
    async def handle(self) -> None:
        return None
'''
RIGHT = LEFT.replace("Left", "Right")


def worker(url: str, folder: Path, module: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "khadem_nb.cli", "--log-level", "ERROR", "worker",
                             "--queue-url", url, "--import", module, "--concurrency", "50", "--burst"],
                            env={**os.environ, "PYTHONPATH": str(folder)}, cwd=folder)


async def rates(url: str, folder: Path, kinds: list[str], n: int) -> dict[str, float]:
    """Store ``n`` jobs spread over ``kinds``, drain them with a worker per kind, and return
    each kind's rate (jobs/s over its own span)."""
    from left_jobs import Left  # type: ignore[import-not-found]
    from right_jobs import Right  # type: ignore[import-not-found]

    classes = {"left": Left, "right": Right}
    async with QueueManager(url) as manager:
        await manager.driver.purge()
        await manager.dispatch_many([classes[kinds[i % len(kinds)]]() for i in range(n)])
        workers = [worker(url, folder, f"{kind}_jobs") for kind in kinds]
        for process in workers:
            process.wait(timeout=900)
        records = await manager.jobs("completed")
        assert len(records) == n, f"{len(records)} of {n} completed"
        found = {}
        for kind in kinds:
            mine = [r for r in records if r.name.lower() == kind]
            first = min(r.started_ms or 0 for r in mine)
            last = max(r.finished_ms or 0 for r in mine)
            found[kind] = len(mine) / max((last - first) / 1000, 1e-3)
        await manager.driver.purge()
        return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--drivers", default="sqlite,file,redis,postgres")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="khadem-bench-kinds-") as tmp:
        folder = Path(tmp)
        (folder / "left_jobs.py").write_text(LEFT)
        (folder / "right_jobs.py").write_text(RIGHT)
        sys.path.insert(0, str(folder))
        print(f"{args.jobs} no-ops, half Left and half Right; workers of concurrency 50; "
              f"medians of {args.rounds} rounds")
        print("| driver | each worker, sharing (jobs/s) | alone (jobs/s) | shared / alone |")
        print("|---|---:|---:|---:|")
        for driver in args.drivers.split(","):
            n = args.jobs // 3 if driver == "file" else args.jobs
            shared: list[float] = []
            alone: list[float] = []
            for round_number in range(args.rounds):
                for kinds in (["left", "right"], ["left"], ["right"]):  # a queue each
                    url = queue_url(driver, tmp, f"kinds{round_number}{''.join(k[0] for k in kinds)}")
                    try:
                        found = asyncio.run(rates(url, folder, kinds, n if len(kinds) == 2 else n // 2))
                    finally:
                        drop_schema(url)
                    (shared if len(kinds) == 2 else alone).extend(found.values())
            ratio = statistics.median(shared) / statistics.median(alone)
            print(f"| {driver} | {statistics.median(shared):,.0f} | {statistics.median(alone):,.0f} | "
                  f"{ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
