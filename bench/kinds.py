"""Mixed fleets: two workers with disjoint job kinds sharing a queue, against each alone.

Per driver and round: ``--jobs`` no-ops, half of kind ``Left`` and half of kind ``Right``
interleaved in one queue, stored with one bulk dispatch; then two ``khadem-nb worker --burst
--concurrency 50`` processes, one importing only ``Left``, the other only ``Right``, started at
once, drain it (every claim of each is filtered to its kind). Each worker's rate is its half
over the span from its first job's start to its last job's end, read from the records. Against
it: the same two workers started at once, each on a named queue of its own in the same storage
(one SQLite file, folder, Redis prefix or schema) holding only its half (no filter needed), so
both set-ups share the machine and the storage alike and the ratio shared / alone is what
sharing the queue costs each worker. Medians of ``--rounds`` rounds.

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


async def rates(urls: dict[str, str], folder: Path, n: int) -> dict[str, float]:
    """Store ``n`` jobs of each kind at its URL (interleaved where two kinds share one), start a
    worker per kind at once, and return each kind's rate (jobs/s over its own span)."""
    from left_jobs import Left  # type: ignore[import-not-found]
    from right_jobs import Right  # type: ignore[import-not-found]

    classes = {"left": Left, "right": Right}
    managers = {url: await QueueManager(url).init() for url in set(urls.values())}
    try:
        for manager in managers.values():
            await manager.driver.purge()
        for url, manager in managers.items():
            kinds = [kind for kind, at in urls.items() if at == url]
            await manager.dispatch_many([classes[kinds[i % len(kinds)]]() for i in range(n * len(kinds))])
        workers = [worker(url, folder, f"{kind}_jobs") for kind, url in urls.items()]
        for process in workers:
            process.wait(timeout=900)
        found = {}
        for kind, url in urls.items():
            mine = [r for r in await managers[url].jobs("completed") if r.name.lower() == kind]
            assert len(mine) == n, f"{len(mine)} of {n} {kind} jobs completed"
            first = min(r.started_ms or 0 for r in mine)
            last = max(r.finished_ms or 0 for r in mine)
            found[kind] = n / max((last - first) / 1000, 1e-3)
        return found
    finally:
        for manager in managers.values():
            await manager.driver.purge()
            await manager.close()


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
            n = (args.jobs // 3 if driver == "file" else args.jobs) // 2  # jobs of each kind
            shared: list[float] = []
            alone: list[float] = []
            for round_number in range(args.rounds):
                one = queue_url(driver, tmp, f"kinds{round_number}")
                apart = {kind: f"{one}&name={kind}" for kind in ("left", "right")}  # same storage
                try:
                    shared += asyncio.run(rates({"left": one, "right": one}, folder, n)).values()
                    alone += asyncio.run(rates(apart, folder, n)).values()
                finally:
                    drop_schema(one)
            ratio = statistics.median(shared) / statistics.median(alone)
            print(f"| {driver} | {statistics.median(shared):,.0f} | {statistics.median(alone):,.0f} | "
                  f"{ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
