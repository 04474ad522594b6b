"""What ``kn.report`` costs: jobs that report every step against the same jobs that do not.

Each job runs STEPS steps of the same small numpy work (a 64x64 product); the reporting kind
calls ``kn.report(step, loss=..., acc=...)`` at each step. J jobs are drained by the in-process
worker (8 consumers, memory) or by ``khadem-nb worker --burst --concurrency 8`` (SQLite, Redis);
the rate is steps a second over the span from the first start to the last end, read from the
records. The two kinds alternate round by round; medians.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 \\
    python bench/report_cost.py [--jobs 16] [--steps 10000] [--rounds 3] [--drivers memory,sqlite,redis]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from regression import drop_schema, queue_url, run_child

JOBS_MODULE = '''
import numpy as np

import khadem_nb as kn
from khadem_nb import QueueJob

A = np.random.default_rng(0).standard_normal((64, 64))


class Steps(QueueJob):
    """STEPS steps of a small product, reporting nothing."""

    def __init__(self, steps):
        self.steps = steps

    async def handle(self):
        x = np.ones(64)
        for _ in range(self.steps):
            x = np.tanh(A @ x)
        return float(x[0])


class ReportedSteps(Steps):
    """The same, reporting two metrics at every step."""

    async def handle(self):
        x = np.ones(64)
        for step in range(self.steps):
            x = np.tanh(A @ x)
            kn.report(step, loss=float(x[0]), acc=float(x[1]))
        return float(x[0])
'''
KINDS = ("Steps", "ReportedSteps")


async def child(driver: str, folder: str, kind: str, jobs: int, steps: int) -> float:
    import report_cost_jobs

    from khadem_nb import QueueManager

    url = queue_url(driver, folder, f"{kind.lower()}{os.getpid()}")
    job_class = getattr(report_cost_jobs, kind)
    manager = await QueueManager(url).init()
    try:
        await manager.driver.purge()
        await manager.dispatch_many([job_class(steps) for _ in range(jobs)])
        if driver == "memory":
            await manager.start_worker(max_jobs=jobs, concurrency=8, delay=0.01)
        else:
            command = [sys.executable, "-m", "khadem_nb.cli", "--log-level", "ERROR", "worker", "--queue-url",
                       url, "--import", "report_cost_jobs", "--concurrency", "8", "--burst"]
            subprocess.run(command, env=os.environ.copy(), cwd=folder, check=True, timeout=1200)
        records = await manager.jobs("completed")
        assert len(records) == jobs, f"{len(records)} of {jobs} completed"
        first = min(r.started_ms for r in records if r.started_ms is not None)
        last = max(r.finished_ms for r in records if r.finished_ms is not None)
        return jobs * steps / max((last - first) / 1000, 1e-3)
    finally:
        await manager.driver.purge()
        await manager.close()
        drop_schema(url)


def measure(driver: str, folder: Path, kind: str, jobs: int, steps: int) -> float:
    return float(run_child(__file__, folder, [driver, str(folder), kind, str(jobs), str(steps)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--drivers", default="memory,sqlite,redis")
    parser.add_argument("--child", nargs=5, metavar=("DRIVER", "FOLDER", "KIND", "JOBS", "STEPS"))
    args = parser.parse_args()
    if args.child:
        driver, folder, kind, jobs, steps = args.child
        print(json.dumps(asyncio.run(child(driver, folder, kind, int(jobs), int(steps)))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        (folder / "report_cost_jobs.py").write_text(JOBS_MODULE)
        for driver in args.drivers.split(","):
            rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
            for round_ in range(args.rounds):
                for kind in KINDS if round_ % 2 == 0 else KINDS[::-1]:
                    rates[kind].append(measure(driver, folder, kind, args.jobs, args.steps))
                    rate = rates[kind][-1]
                    print(f"round {round_ + 1} {driver} {kind}: {rate:,.0f} steps/s", file=sys.stderr)
            plain, reported = (statistics.median(rates[kind]) for kind in KINDS)
            ratios = [b / a for a, b in zip(rates["Steps"], rates["ReportedSteps"], strict=True)]
            rows.append(f"| {driver} | {plain:,.0f} | {reported:,.0f} | {statistics.median(ratios):.2f} "
                        f"({min(ratios):.2f}-{max(ratios):.2f}) |")
    print(f"{args.jobs} jobs x {args.steps:,} steps, {args.rounds} rounds\n")
    print("| driver | no reports (steps/s) | a report a step (steps/s) | ratio (spread) |")
    print("|---|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
