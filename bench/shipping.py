"""Shipped code against imported code, and the cost of shipping a big closure.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 python bench/shipping.py

- sweep: ``--n`` points of one job function drained by 2 ``khadem-nb worker`` processes on
  Redis: the function defined here (in ``__main__``, so shipped, and verified once per worker)
  against the same function imported by the workers from ``bench/shipjobs.py``; seconds from
  the first dispatch to the last result, median of ``--rounds``, the two alternating;
- closure: the envelope of a function that closes over a 10 MB numpy array: its size and the
  time to build and store it, and the refusal under a smaller ``queue.code_limit``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import khadem_nb as kn
from khadem_nb import SerializationError
from khadem_nb.runtime.shipping import fingerprint

HERE = Path(__file__).resolve().parent
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
SECRET = "the bench's code-shipping secret"


def square(x: int) -> int:
    return x * x


def start_workers(url: str) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "KHADEM_SECRET": SECRET,
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "khadem_nb.cli", "--log-level", "WARNING", "worker", "--queue-url",
               url, "--trust-code", "--import", "shipjobs", "--concurrency", "8"]
    return [subprocess.Popen(command, env=env) for _ in range(2)]


def sweep_seconds(q: kn.Queue, job: kn.notebook.functions.JobFunction, n: int) -> float:
    started = time.perf_counter()
    group = job.map([{"x": i} for i in range(n)], fresh=True)
    group.wait(timeout=600)
    elapsed = time.perf_counter() - started
    counts = group.counts()
    assert counts["completed"] == n, counts
    q.clear()
    return elapsed


def sweeps(n: int, rounds: int) -> dict[str, float]:
    url = f"{REDIS_URL}?prefix=khadem-bench-ship"
    q = kn.Queue(url, ship_code=True, secret=SECRET)
    q.clear()
    import shipjobs

    shipped = q.job(name="__main__.square")(square)
    imported = q.job(name="shipjobs.square")(shipjobs.square.__wrapped__)
    workers = start_workers(url)
    try:
        sweep_seconds(q, shipped, 200)  # workers up, shipped code loaded
        sweep_seconds(q, imported, 200)
        times: dict[str, list[float]] = {"shipped": [], "imported": []}
        for _ in range(rounds):
            times["shipped"].append(sweep_seconds(q, shipped, n))
            times["imported"].append(sweep_seconds(q, imported, n))
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(30)
        q.close()
    return {name: statistics.median(values) for name, values in times.items()}


def big_closure() -> tuple[int, float, str]:
    data = np.random.default_rng(0).random(10 * 2**20 // 8)  # 10 MiB of float64

    def mean_of() -> float:
        return float(data.mean())

    mean_of.__module__ = "__main__"
    q = kn.Queue(ship_code=True, secret=SECRET)
    started = time.perf_counter()
    q.job(mean_of).dispatch()
    elapsed = time.perf_counter() - started
    async def stored() -> bytes | None:
        return await q.manager.driver.load_code(fingerprint(mean_of))

    size = len(q.run(stored()) or b"")
    q.close()
    small = kn.Queue({"queue": {"driver": "memory", "ship_code": True, "secret": SECRET,
                                "code_limit": 8 * 2**20}})
    try:
        small.job(mean_of).dispatch()
        refusal = "stored (not refused)"
    except SerializationError as exc:
        refusal = str(exc)
    small.close()
    return size, elapsed, refusal


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    medians = sweeps(args.n, args.rounds)
    print(f"| code | {args.n:,}-point sweep, 2 workers, s | jobs/s |")
    print("|---|---:|---:|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.2f} | {args.n / seconds:,.0f} |")
    print(f"\nshipped / imported: {medians['shipped'] / medians['imported']:.3f}\n")
    size, elapsed, refusal = big_closure()
    print(f"closure over a 10 MiB array: envelope {size / 2**20:.1f} MiB, fingerprint + seal + store "
          f"{elapsed * 1000:.0f} ms\nwith queue.code_limit = 8 MiB: {refusal}")


if __name__ == "__main__":
    main()
