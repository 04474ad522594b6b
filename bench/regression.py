"""The regression guard: two trees of khadem_nb side by side on every queued driver.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 \\
    BENCH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\
    python bench/regression.py TREE_A TREE_B [--rounds 3] [--drivers memory,file,sqlite,redis,postgres]

A tree is a folder holding a ``khadem_nb`` package (a checkout: ``git worktree add /tmp/a
HEAD~1``). Each measurement runs in a fresh process whose ``PYTHONPATH`` starts with the tree,
the two trees alternating round by round, and reports the median of each side and the ratio
B / A with the spread of the rounds' own ratios (min to max). Per driver:

- **drain**: N queued no-ops (stored with one bulk dispatch), worked off by one
  ``khadem-nb worker --burst --concurrency 50`` process, the path users run; the rate is N over
  the span from the first job's start to the last job's end, read from the records, so the
  worker's start-up is not counted. The memory driver has no second process: its worker runs
  in the measuring process, and its row also shows ``ThreadPoolExecutor(4).map`` and
  ``asyncio.gather`` of N no-op calls in the same process for scale.
- **enqueue**: N awaited ``dispatch()`` calls, one at a time.
- **round trip**: ROUNDTRIPS sequential ``dispatch_and_wait`` calls with a worker already
  waiting, p50 and p99.

``--delayed K`` first stores K jobs delayed by an hour in each queue, so every claim of the
drain and the round trips works beside K delayed jobs that are not yet due (a queue of
reminders for tomorrow, or of retries backing off).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DRIVERS = ("memory", "file", "sqlite", "redis", "postgres")
DRAIN_N = {"memory": 50_000, "file": 3_000, "sqlite": 10_000, "redis": 30_000, "postgres": 10_000}
ENQUEUE_N = {"memory": 20_000, "file": 1_000, "sqlite": 3_000, "redis": 3_000, "postgres": 2_000}
ROUNDTRIPS = 300
JOBS_MODULE = '''
from khadem_nb import QueueJob


class RegressionNoop(QueueJob):
    async def handle(self) -> None:
        return None
'''


# -- the measuring child: one driver, one tree -----------------------------------------------
def queue_url(driver: str, folder: str, tag: str) -> str:
    """The queue of ``driver`` for one measurement, keeping every record of a drain."""
    url = _base_url(driver, folder, tag)
    return f"{url}{'&' if '?' in url else '?'}retention=1000000"


def _base_url(driver: str, folder: str, tag: str) -> str:
    if driver == "file":
        return f"file://{folder}/q-{tag}"
    if driver == "sqlite":
        return f"sqlite:///{folder}/q-{tag}.db"
    if driver == "redis":
        return f"{os.environ.get('BENCH_REDIS_URL', 'redis://127.0.0.1:6379/9')}?prefix=khadem-regression-{tag}"
    if driver == "postgres":
        base = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
        return f"{base}{'&' if '?' in base else '?'}schema=khadem_regression_{tag}"
    return "memory://"


async def child(driver: str, folder: str, tag: str, delayed: int = 0) -> dict[str, float]:
    from regression_jobs import RegressionNoop

    from khadem_nb import QueueManager

    url = queue_url(driver, folder, tag)
    manager = await QueueManager(url).init()
    await manager.driver.purge()
    results: dict[str, float] = {}
    try:
        results["enqueue"] = await enqueue_rate(manager, RegressionNoop, ENQUEUE_N[driver])
        await manager.driver.purge()
        await store_delayed(manager, RegressionNoop, delayed)
        results["drain"] = await drain_rate(manager, RegressionNoop, driver, url, folder)
        await manager.driver.purge()
        await store_delayed(manager, RegressionNoop, delayed)
        results["p50_ms"], results["p99_ms"] = await round_trips(manager, RegressionNoop, driver, url, folder)
    finally:
        await manager.driver.purge()
        await manager.close()
        drop_schema(url)
    if driver == "memory":
        results["pool"], results["gather"] = pool_rate(DRAIN_N[driver]), await gather_rate(DRAIN_N[driver])
    return results


def drop_schema(url: str) -> None:
    """Leave the PostgreSQL server as it was: drop the schema a measurement made."""
    if not url.startswith("postgresql"):
        return
    import psycopg

    from khadem_nb.config import parse_config

    schema = parse_config(url).schema.lower()
    with psycopg.connect(url.split("?")[0], autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def store_delayed(manager: Any, job_class: Any, k: int) -> None:
    for start in range(0, k, 5000):
        await manager.dispatch_many([job_class() for _ in range(min(5000, k - start))], delay=3600)


async def enqueue_rate(manager: Any, job_class: Any, n: int) -> float:
    job = job_class()
    started = time.perf_counter()
    for _ in range(n):
        await manager.dispatch(job)
    return n / (time.perf_counter() - started)


def worker_process(url: str, folder: str, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "khadem_nb.cli", "--log-level", "ERROR", "worker", "--queue-url", url,
               "--import", "regression_jobs", "--concurrency", "50", *extra]
    return subprocess.Popen(command, env=os.environ.copy(), cwd=folder)


async def drain_rate(manager: Any, job_class: Any, driver: str, url: str, folder: str) -> float:
    n = DRAIN_N[driver]
    await manager.dispatch_many([job_class() for _ in range(n)])
    if driver == "memory":
        await manager.start_worker(max_jobs=n, concurrency=50, delay=0.01)
    else:
        worker = worker_process(url, folder, "--burst")
        worker.wait(timeout=600)
    records = await manager.jobs("completed")
    assert len(records) == n, f"{len(records)} of {n} completed on {driver}"
    first = min(r.started_ms for r in records if r.started_ms is not None)
    last = max(r.finished_ms for r in records if r.finished_ms is not None)
    return n / max((last - first) / 1000, 1e-3)


async def round_trips(manager: Any, job_class: Any, driver: str, url: str,
                      folder: str) -> tuple[float, float]:
    worker = None
    if driver == "memory":
        await manager.start_worker(concurrency=50, run_in_background=True)
    else:
        worker = worker_process(url, folder)
        await manager.dispatch_and_wait(job_class(), timeout=60)  # the worker is up and waiting
    try:
        times = []
        for _ in range(ROUNDTRIPS):
            started = time.perf_counter()
            await manager.dispatch_and_wait(job_class(), timeout=60)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=60)
        await manager.stop_worker()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def pool_rate(n: int) -> float:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        started = time.perf_counter()
        list(pool.map(lambda _: None, range(n)))
        return n / (time.perf_counter() - started)


async def gather_rate(n: int) -> float:
    async def noop() -> None:
        return None

    started = time.perf_counter()
    await asyncio.gather(*(noop() for _ in range(n)))
    return n / (time.perf_counter() - started)


# -- the parent: alternating trees ------------------------------------------------------------
def run_child(script: str, folder: Path, args: Sequence[str], *, first: Sequence[Path] = ()) -> Any:
    """Run ``script --child ARGS`` in ``folder``, with ``first``, ``folder`` and this bench
    folder importable in that order (so a tree in ``first`` is the khadem_nb it imports), and
    return the JSON value its last printed line holds; a child that fails ends the parent with
    its error."""
    path = os.pathsep.join([*map(str, first), str(folder), str(Path(__file__).parent),
                            os.environ.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, script, "--child", *args], env={**os.environ, "PYTHONPATH": path},
                         cwd=folder, capture_output=True, text=True, timeout=1800)
    if run.returncode != 0:
        raise SystemExit(f"{Path(script).name} --child {' '.join(args)} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def measure(tree: Path, driver: str, folder: Path, tag: str, delayed: int) -> dict[str, float]:
    args = [driver, str(folder), tag, "--delayed", str(delayed)]
    found: dict[str, float] = run_child(__file__, folder, args, first=[tree])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="*")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--drivers", default=",".join(DRIVERS))
    parser.add_argument("--delayed", type=int, default=0, metavar="K",
                        help="jobs delayed by an hour stored beside each drain and round trip")
    parser.add_argument("--child", nargs=3, metavar=("DRIVER", "FOLDER", "TAG"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(*args.child, delayed=args.delayed))))
        return
    if len(args.trees) != 2:
        parser.error("give two trees: TREE_A TREE_B")
    trees = [Path(t).resolve() for t in args.trees]
    drivers = args.drivers.split(",")
    results: dict[str, dict[str, list[dict[str, float]]]] = {d: {"A": [], "B": []} for d in drivers}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "regression_jobs.py").write_text(JOBS_MODULE)
        for round_number in range(args.rounds):
            for driver in drivers:
                order = [("A", trees[0]), ("B", trees[1])]
                if round_number % 2:
                    order.reverse()
                for side, tree in order:
                    tag = f"{side.lower()}{round_number}"
                    results[driver][side].append(measure(tree, driver, folder, tag, args.delayed))
                    print(f"round {round_number + 1} {driver} {side}: {results[driver][side][-1]}",
                          file=sys.stderr)
    report(results, trees)


def report(results: dict[str, dict[str, list[dict[str, float]]]], trees: list[Path]) -> None:
    print(f"A = {trees[0]}\nB = {trees[1]}\n")
    print("| driver | measure | A | B | B / A (spread) |")
    print("|---|---|---:|---:|---:|")
    for driver, sides in results.items():
        for key, unit in (("drain", "jobs/s"), ("enqueue", "jobs/s"), ("p50_ms", "ms"), ("p99_ms", "ms"),
                          ("pool", "calls/s"), ("gather", "calls/s")):
            if key not in sides["A"][0]:
                continue
            a = [r[key] for r in sides["A"]]
            b = [r[key] for r in sides["B"]]
            ratios = [y / x for x, y in zip(a, b, strict=True)]
            medians = f"{statistics.median(a):,.1f} | {statistics.median(b):,.1f}"
            spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
            print(f"| {driver} | {key} ({unit}) | {medians} | {statistics.median(ratios):.2f} ({spread}) |")


if __name__ == "__main__":
    main()
