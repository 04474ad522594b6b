"""Instructions per job of two trees, counted by valgrind's callgrind: a measure of the client's
own cost that the machine's changing clock speed does not move (the same count run after run).

For each driver and tree, one process dispatches N no-ops one ``await dispatch()`` at a time
and drains them with one in-process worker; the same process with N = 0 (imports, open,
close) is subtracted, and the rest divided by N. Servers run in their own processes, so on
Redis and PostgreSQL this counts the client's side only.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 \\
    BENCH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\
    python bench/instructions.py TREE_A TREE_B [--drivers memory,file,sqlite,redis,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from regression import drop_schema, queue_url  # the same queues as the regression guard

N = {"memory": 3000, "file": 1000, "sqlite": 2000, "redis": 2000, "postgres": 2000}


async def child(n: int, url: str) -> None:
    import gc

    from khadem_nb import QueueJob, QueueManager

    gc.disable()  # a collection's timing would move the count

    class InstructionsNoop(QueueJob):
        async def handle(self) -> None:
            return None

    manager = await QueueManager(url).init()
    await manager.driver.purge()
    job = InstructionsNoop()
    for _ in range(n):
        await manager.dispatch(job)
    if n:
        await manager.start_worker(max_jobs=n, delay=0.01)
    await manager.driver.purge()
    await manager.close()
    drop_schema(url)


def count(tree: Path, driver: str, n: int) -> int:
    """Instructions of one child process (a fresh queue each time)."""
    with tempfile.TemporaryDirectory() as folder:
        python = os.path.realpath(sys.executable)  # the interpreter itself, not a shim script
        run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/out", python,
                              __file__, "--child", str(n), queue_url(driver, folder, "instr")],
                             env={**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "1"},
                             capture_output=True, text=True,
                             timeout=1800)
        found = re.search(r"Collected : (\d+)", run.stderr)
        if run.returncode != 0 or found is None:
            raise SystemExit(f"{driver} on {tree} failed:\n{run.stderr[-3000:]}")
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="*")
    parser.add_argument("--drivers", default=",".join(N))
    parser.add_argument("--child", nargs=2, metavar=("N", "URL"))
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(int(args.child[0]), args.child[1]))
        return
    if len(args.trees) != 2 or shutil.which("valgrind") is None:
        parser.error("give two trees: TREE_A TREE_B (and install valgrind)")
    trees = [Path(t).resolve() for t in args.trees]
    print(f"A = {trees[0]}\nB = {trees[1]}\n")
    print("| driver | jobs | A (instructions a job) | B | B / A |")
    print("|---|---:|---:|---:|---:|")
    for driver in args.drivers.split(","):
        per_job = [(count(tree, driver, N[driver]) - count(tree, driver, 0)) / N[driver] for tree in trees]
        print(f"| {driver} | {N[driver]:,} | {per_job[0]:,.0f} | {per_job[1]:,.0f} | "
              f"{per_job[1] / per_job[0]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
