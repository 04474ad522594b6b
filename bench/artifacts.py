"""The artifact store: a 1 GB array result, a 1,000-point sweep of 1 MB arrays, and preemption.

1. A ``khadem-nb worker`` process on Redis, with a folder store, runs a job that returns a 1 GiB
   float32 array. Reported: the bytes of the job's stored result in Redis; the time from the
   job's return (stamped in the job) to ``outcome(record)`` holding the array in this process,
   against ``numpy.save`` then ``numpy.load(mmap_mode="r")`` of the same array by hand; and the
   worker's peak resident memory (``ru_maxrss`` of the child) against the array's size.
2. A 1,000-point sweep on SQLite whose points each return a 1 MB array: ``g.results()`` time
   and the memory it allocates (tracemalloc), handles unloaded.
3. Preemption: a 250-step job checkpointing every 10 steps (100 ms a step), its worker process
   sent SIGTERM at a random step (0 to 0.4 s after it ran its first) PREEMPTIONS times, then
   finished by a burst worker, on SQLite, Redis and PostgreSQL: steps redone per preemption,
   attempts spent, and whether the result equals an uninterrupted run's.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 \\
    BENCH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\
    python bench/artifacts.py [--parts big,sweep,preempt] [--preemptions 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from khadem_nb import QueueManager
from khadem_nb.runtime.waiting import outcome

STEPS = 250  # of the preempted job (Steps)
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
JOBS = '''
import time

import numpy as np

from khadem_nb import Preempted, QueueJob, checkpoint, preempted, restore


class BigArray(QueueJob):
    def __init__(self, n):
        self.n = n

    def handle(self):
        array = np.ones(self.n, dtype=np.float32)
        return {"array": array, "returned_at": time.time()}


class Steps(QueueJob):
    def __init__(self, log, steps=250, every=10, pause=0.1):
        self.log, self.steps, self.every, self.pause = log, steps, every, pause

    def handle(self):
        state = restore() or {"step": 0, "total": 0, "w": np.zeros(1000)}
        step, total, w = state["step"], state["total"], np.array(state["w"])
        while step < self.steps:
            step += 1
            total += step
            w += step
            with open(self.log, "a") as handle:
                handle.write(f"{step}\\n")
            time.sleep(self.pause)
            if step % self.every == 0:
                checkpoint({"step": step, "total": total, "w": w})
                if preempted():
                    raise Preempted()
        return {"total": total, "w": float(w.sum())}
'''


def worker(url: str, folder: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "khadem_nb.cli", "--log-level", "ERROR", "worker", "--queue-url", url,
               "--import", "bench_artifact_jobs", *extra]
    return subprocess.Popen(command, env=env, cwd=folder, text=True)


def big_array(folder: Path, n: int) -> list[str]:
    from bench_artifact_jobs import BigArray

    url = f"{REDIS}?prefix=bench-artifacts-{os.getpid()}"
    store = folder / "store"

    async def run() -> tuple[int, float, float]:
        async with QueueManager({"queue": {"url": url, "artifacts": str(store)}}) as manager:
            await manager.driver.purge()
            job_id = await manager.dispatch(BigArray(n))
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            proc = worker(url, folder, "--burst", "--artifacts", str(store))
            record = (await manager.wait([job_id], timeout=600))[0]
            value = outcome(record)
            held = time.time()
            assert value["array"].shape == (n,) and float(value["array"][-1]) == 1.0
            proc.wait(timeout=600)
            peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            stored = len(json.dumps(record.result))
            await manager.driver.purge()
            return stored, held - value["returned_at"], max(peak_kb, before) * 1024

    stored, through_queue, peak = asyncio.run(run())
    array = np.ones(n, dtype=np.float32)
    path = folder / "by-hand.npy"
    started = time.time()
    np.save(path, array, allow_pickle=False)
    loaded = np.load(path, mmap_mode="r", allow_pickle=False)
    assert float(loaded[-1]) == 1.0
    by_hand = time.time() - started
    size = array.nbytes
    return [f"| a {size / 2**30:.0f} GiB float32 result on Redis | bytes of the record's result | {stored} |",
            f"| | job's return to the array held | {through_queue:.2f} s |",
            f"| | `np.save` + `np.load(mmap_mode='r')` by hand | {by_hand:.2f} s |",
            f"| | ratio | **{through_queue / by_hand:.2f}x** |",
            f"| | worker's peak memory / array | **{peak / size:.2f}x** ({peak / 2**30:.2f} GiB) |"]


def sweep(folder: Path, points: int) -> list[str]:
    import khadem_nb as kn

    q = kn.Queue(f"sqlite:///{folder / 'sweep.db'}")

    @q.job(name="bench_megabyte_point")
    def point(i: int) -> dict[str, Any]:
        return {"w": np.full(2**17, float(i)), "loss": 1.0 / (i + 1)}  # 1 MiB

    try:
        q.start(concurrency=4)
        group = point.sweep(i=list(range(points)))
        group.wait(timeout=1200)
        tracemalloc.start()
        started = time.perf_counter()
        frame = group.results()
        took = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(frame) == points and repr(frame["w"][0]).startswith("<ndarray (131072,) float64")
    finally:
        q.stop()
        q.close()
    return [f"| {points:,}-point sweep of 1 MiB arrays, SQLite | `g.results()` time | {took:.2f} s |",
            f"| | memory it allocates (tracemalloc peak) | {peak / 2**20:.1f} MiB |"]


def preemption(folder: Path, driver: str, count: int, rng: random.Random) -> str:
    from bench_artifact_jobs import Steps

    url = {"sqlite": f"sqlite:///{folder / 'preempt.db'}",
           "redis": f"{REDIS}?prefix=bench-preempt-{os.getpid()}",
           "postgres": f"{POSTGRES}?schema=bench_preempt_{os.getpid()}"}[driver]
    log = folder / f"steps-{driver}.log"
    log.unlink(missing_ok=True)

    async def dispatch() -> str:
        async with QueueManager(url) as manager:
            await manager.driver.purge()
            return await manager.dispatch(Steps(str(log)), max_attempts=1)

    async def step_of(job_id: str) -> int:
        async with QueueManager(url) as manager:
            stored = (await manager.get_job(job_id)).meta.get("checkpoint")
            return 0 if stored is None else int(stored["step"])

    async def finished(job_id: str) -> Any:
        async with QueueManager(url) as manager:
            record = (await manager.wait([job_id], timeout=600))[0]
            await manager.driver.purge()
            return record

    job_id = asyncio.run(dispatch())
    preempted = 0
    for _ in range(count):
        ran = len(log.read_text().split()) if log.exists() else 0
        proc = worker(url, folder, "--grace", "30")
        while (len(log.read_text().split()) if log.exists() else 0) == ran and proc.poll() is None:
            time.sleep(0.01)  # until this worker runs a step
        time.sleep(rng.uniform(0.0, 0.4))  # then a random number of steps more
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        preempted += 1
        if asyncio.run(step_of(job_id)) >= STEPS:
            break
    proc = worker(url, folder, "--burst")
    proc.wait(timeout=600)
    record = asyncio.run(finished(job_id))
    steps = [int(line) for line in log.read_text().split()]
    redone = len(steps) - len(set(steps))
    total = STEPS * (STEPS + 1) // 2
    right = record.result == {"total": total, "w": float(1000 * total)}
    if driver == "postgres":
        import psycopg

        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS bench_preempt_{os.getpid()} CASCADE")
    return (f"| {driver} | {preempted} | {redone / max(1, preempted):.1f} | {record.attempt - 1} | "
            f"{'yes' if right and record.status.value == 'completed' else 'NO'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="big,sweep,preempt")
    parser.add_argument("--size", type=int, default=2**28, help="float32 elements of the big array (1 GiB)")
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--preemptions", type=int, default=20)
    parser.add_argument("--drivers", default="sqlite,redis,postgres")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        (folder / "bench_artifact_jobs.py").write_text(JOBS)
        sys.path.insert(0, str(folder))
        rows: list[str] = []
        if "big" in parts:
            rows += big_array(folder, args.size)
        if "sweep" in parts:
            rows += sweep(folder, args.points)
        if rows:
            print("| measure | | value |\n|---|---|---:|")
            print("\n".join(rows))
        if "preempt" in parts:
            rng = random.Random(0)
            print(f"\n{args.preemptions} SIGTERMs a driver, a {STEPS}-step job checkpointing every "
                  "10 steps\n")
            print("| driver | preemptions | steps redone a preemption | attempts spent "
                  "| result as uninterrupted |")
            print("|---|---:|---:|---:|---|")
            for driver in args.drivers.split(","):
                print(preemption(folder, driver, args.preemptions, rng), flush=True)


if __name__ == "__main__":
    main()
