"""Batched jobs against one call a job: N small numpy inference jobs, each the score of one
input through a float32 layer (2048x2048 unless ``--width``), drained by ``khadem-nb worker
--burst`` (the in-process worker on memory), as ``Infer`` (``handle``: one matrix-vector product
a job) and as ``InferBatch`` (``batch_size=64``: one matrix product a batch). A job names its input by index
into the worker's dataset (as inference jobs name an image or a row already stored), so the
bench measures the calls, not the parsing of a 2,048-float argument. The rate is N over the
span from the first job's start to the last job's end, read from the records; medians of the
rounds, the kinds alternating round by round.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 \\
    python bench/batching.py [--n 10000] [--rounds 3] [--drivers memory,redis,sqlite]
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

from khadem_nb import QueueJob

WIDTH = {width}
WEIGHTS = np.random.default_rng(0).standard_normal((WIDTH, WIDTH)).astype(np.float32)
WEIGHTS_T = np.ascontiguousarray(WEIGHTS.T)
INPUTS = np.random.default_rng(1).standard_normal((1024, WIDTH)).astype(np.float32)


class Infer(QueueJob):
    """One input, one matrix-vector product: the score of its best class."""

    def __init__(self, i):
        self.i = i

    def handle(self):
        return float((WEIGHTS @ INPUTS[self.i % len(INPUTS)]).max())


class InferBatch(Infer):
    """The same, 64 inputs a call: one matrix-matrix product."""

    batch_size = 64
    batch_wait = 0.01

    @classmethod
    def handle_batch(cls, jobs):
        rows = INPUTS[[job.i % len(INPUTS) for job in jobs]]
        return (rows @ WEIGHTS_T).max(axis=1).tolist()
'''
KINDS = ("Infer", "InferBatch")
CONCURRENCY = 8


async def child(driver: str, folder: str, kind: str, n: int) -> float:
    from batching_jobs import Infer, InferBatch

    from khadem_nb import QueueManager

    url = queue_url(driver, folder, f"{kind.lower()}{os.getpid()}")
    job_class = {"Infer": Infer, "InferBatch": InferBatch}[kind]
    manager = await QueueManager(url).init()
    try:
        await manager.driver.purge()
        await manager.dispatch_many([job_class(i) for i in range(n)])
        if driver == "memory":
            await manager.start_worker(max_jobs=n, concurrency=CONCURRENCY, delay=0.01)
        else:
            command = [sys.executable, "-m", "khadem_nb.cli", "--log-level", "ERROR", "worker", "--queue-url",
                       url, "--import", "batching_jobs", "--concurrency", str(CONCURRENCY), "--burst"]
            subprocess.run(command, env=os.environ.copy(), cwd=folder, check=True, timeout=1200)
        records = await manager.jobs("completed")
        assert len(records) == n, f"{len(records)} of {n} completed"
        first = min(r.started_ms for r in records if r.started_ms is not None)
        last = max(r.finished_ms for r in records if r.finished_ms is not None)
        return n / max((last - first) / 1000, 1e-3)
    finally:
        await manager.driver.purge()
        await manager.close()
        drop_schema(url)


def measure(driver: str, folder: Path, kind: str, n: int) -> float:
    return float(run_child(__file__, folder, [driver, str(folder), kind, str(n)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--drivers", default="memory,redis,sqlite")
    parser.add_argument("--width", type=int, default=2048, help="the layer's width (default 2048)")
    parser.add_argument("--child", nargs=4, metavar=("DRIVER", "FOLDER", "KIND", "N"))
    args = parser.parse_args()
    if args.child:
        driver, folder, kind, n = args.child
        print(json.dumps(asyncio.run(child(driver, folder, kind, int(n)))))
        return
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        (folder / "batching_jobs.py").write_text(JOBS_MODULE.replace("{width}", str(args.width)))
        for driver in args.drivers.split(","):
            rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
            for round_ in range(args.rounds):
                for kind in KINDS if round_ % 2 == 0 else KINDS[::-1]:
                    rates[kind].append(measure(driver, folder, kind, args.n))
                    rate = rates[kind][-1]
                    print(f"round {round_ + 1} {driver} {kind}: {rate:,.0f} jobs/s", file=sys.stderr)
            one, batched = (statistics.median(rates[kind]) for kind in KINDS)
            ratios = [b / a for a, b in zip(rates["Infer"], rates["InferBatch"], strict=True)]
            rows.append(f"| {driver} | {one:,.0f} | {batched:,.0f} | {statistics.median(ratios):.1f}x "
                        f"({min(ratios):.1f}-{max(ratios):.1f}) |")
    print(f"N = {args.n:,} jobs, a {args.width}x{args.width} layer, {args.rounds} rounds, "
          f"{CONCURRENCY} consumers\n")
    print("| driver | one call a job (jobs/s) | batch=64 (jobs/s) | ratio (spread) |")
    print("|---|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
