"""Fair turns between keys: how long a small tenant waits behind a big one, and what turns cost.

Per driver and round: ``--jobs`` no-ops of tenant ``a`` stored with one bulk dispatch, then 10
of tenant ``b``; one ``khadem-nb worker --burst --concurrency 50`` process drains the queue.
Three kinds of the same no-op, each in a queue of its own:

- ``plain``: no limit, one line (the line's order: ``b`` waits behind every ``a``);
- ``keyed``: ``limit_key`` with a concurrency no tenant reaches (lanes per tenant, no turns);
- ``fair``: ``fair=True`` with the same ``limit_key`` (lanes that take turns).

Read from the records: ``b`` waits (ms from ``b``'s dispatch to its last job's start) and the
drain (all jobs over the span from the first start to the last end). Medians of ``--rounds``.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 BENCH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\
    python bench/fairness.py [--rounds 3] [--jobs 10000] [--drivers sqlite,file,redis,postgres]
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

from regression import drop_schema, queue_url

from khadem_nb import QueueManager

JOBS = '''
from khadem_nb import QueueJob


class Tenant(QueueJob):
    def __init__(self, tenant: str) -> None:
        self.tenant = tenant

    async def handle(self) -> None:
        return None


class Plain(Tenant):
    pass


class Keyed(Tenant):
    concurrency = 10_000

    def limit_key(self) -> str:
        return self.tenant


class Fair(Keyed):
    concurrency = None
    fair = True
'''
KINDS = ("plain", "keyed", "fair")
SMALL = 10  # jobs of tenant b


def worker(url: str, folder: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "khadem_nb.cli", "--log-level", "ERROR", "worker",
                             "--queue-url", url, "--import", "fair_jobs", "--concurrency", "50", "--burst"],
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
                                str(folder), os.environ.get("PYTHONPATH")]))}, cwd=folder)


async def measure(url: str, folder: Path, kind: str, n: int) -> tuple[float, float]:
    """``b``'s wait (ms) and the drain (jobs/s) of ``n`` jobs of ``a`` then SMALL of ``b``."""
    import fair_jobs  # type: ignore[import-not-found]

    job = getattr(fair_jobs, kind.capitalize())
    manager = await QueueManager(url).init()
    try:
        await manager.driver.purge()
        await manager.dispatch_many([job("a") for _ in range(n)])
        small_at = time.time() * 1000
        await manager.dispatch_many([job("b") for _ in range(SMALL)])
        worker(url, folder).wait(timeout=900)
        done = await manager.jobs("completed")
        assert len(done) == n + SMALL, f"{len(done)} of {n + SMALL} jobs completed"
        small = [r for r in done if isinstance(r.payload, dict) and r.payload.get("tenant") == "b"]
        assert len(small) == SMALL
        wait_ms = max(r.started_ms or 0 for r in small) - small_at
        first = min(r.started_ms or 0 for r in done)
        last = max(r.finished_ms or 0 for r in done)
        return wait_ms, len(done) / max((last - first) / 1000, 1e-3)
    finally:
        await manager.driver.purge()
        await manager.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--drivers", default="sqlite,file,redis,postgres")
    parser.add_argument("--kinds", default=",".join(KINDS), help="of: " + ", ".join(KINDS))
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    with tempfile.TemporaryDirectory(prefix="khadem-bench-fair-") as tmp:
        folder = Path(tmp)
        (folder / "fair_jobs.py").write_text(JOBS)
        sys.path.insert(0, str(folder))
        print(f"{args.jobs} no-ops of tenant a, then {SMALL} of tenant b (file: a third of them); one worker "
              f"of concurrency 50; medians of {args.rounds} rounds")
        print("| driver | kind | b waits (ms) | drain (jobs/s) | drain / plain |")
        print("|---|---|---:|---:|---:|")
        for driver in args.drivers.split(","):
            n = args.jobs // 3 if driver == "file" else args.jobs
            waits: dict[str, list[float]] = {kind: [] for kind in kinds}
            drains: dict[str, list[float]] = {kind: [] for kind in kinds}
            for round_number in range(args.rounds):
                for kind in kinds:  # interleaved: each round measures every kind once
                    url = queue_url(driver, tmp, f"fair{round_number}{kind}")
                    try:
                        wait_ms, drain = asyncio.run(measure(url, folder, kind, n))
                    finally:
                        drop_schema(url)
                    waits[kind].append(wait_ms)
                    drains[kind].append(drain)
            plain = statistics.median(drains["plain"]) if "plain" in drains else float("nan")
            for kind in kinds:
                drain = statistics.median(drains[kind])
                print(f"| {driver} | {kind} | {statistics.median(waits[kind]):,.0f} | {drain:,.0f} | "
                      f"{drain / plain:.2f} |", flush=True)


if __name__ == "__main__":
    main()
