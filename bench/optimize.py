"""``fn.optimize`` against Optuna alone, and TPE through the queue against a grid.

1. Overhead: N no-op trials (the objective returns at once, a sync function or an ``async
   def``) with TPE (seed 0), as ``optimize(..., parallel=1)`` on a queue with 1 in-kernel worker, against
   ``optuna.create_study(...).optimize(objective, n_trials=N)`` in the same process with the same
   sampler; trials a second, the two alternating round by round.
2. Search: a noisy quadratic bowl in 3 dimensions (minimum 0 at (0.2, -0.3, 0.5), noise 0.01),
   budget B trials: how many trials ``optimize`` (TPE, parallel 4) needs before one is within
   5 % and within 1 % of the bowl's range over the search box (a value below BARS), against a
   grid of the same budget (the cube root of B points a side, in ``itertools.product`` order),
   and the best value each found within the budget.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 BENCH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\
    python bench/optimize.py [--n 200] [--rounds 3] [--drivers memory,redis] [--objectives sync,async]
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np
import optuna
from regression import drop_schema, queue_url

import khadem_nb as kn

OPTIMUM = (0.2, -0.3, 0.5)
BOX = (-1.0, 1.0)
#: the bowl's range over the box: its value at the farthest corner
RANGE = sum(max((BOX[0] - o) ** 2, (BOX[1] - o) ** 2) for o in OPTIMUM)
BARS = (0.05 * RANGE, 0.01 * RANGE)  # within 5 % and within 1 % of the range from the optimum
BUDGET = 64


def bowl(x: float, y: float, z: float, seed: int = 0) -> float:
    """The bowl at a point, with noise that is the same for the same point and seed."""
    where = [round(v * 1e6) % 2**31 for v in (x, y, z)]
    noise = np.random.default_rng([*where, seed]).normal(0, 0.01)
    return float((x - OPTIMUM[0]) ** 2 + (y - OPTIMUM[1]) ** 2 + (z - OPTIMUM[2]) ** 2 + noise)


def through_queue(driver: str, n: int, tag: str, objective: str = "sync") -> float:
    """Trials a second of ``optimize`` with a no-op objective: a sync function (run on the
    worker's threads, as most training functions are) or an ``async def`` one (no thread hop)."""
    folder = tempfile.mkdtemp(prefix="khadem-bench-opt-")
    url = queue_url(driver, folder, tag)
    q = kn.Queue(url)

    def noop(x: float) -> float:
        return x

    async def async_noop(x: float) -> float:
        return x

    trial = q.job(name=f"bench_noop_trial_{tag}")(noop if objective == "sync" else async_noop)
    q.start(concurrency=1)
    try:
        started = time.perf_counter()
        trial.optimize({"x": kn.uniform(0, 1)}, metric="x", n_trials=n, parallel=1,
                      sampler=optuna.samplers.TPESampler(seed=0)).wait(timeout=600)
        rate = n / (time.perf_counter() - started)
    finally:
        q.stop()
        q.run(q.manager.driver.purge())
        q.close()
        drop_schema(url)
        shutil.rmtree(folder, ignore_errors=True)
    return rate


def optuna_alone(n: int) -> float:
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    started = time.perf_counter()
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=n)
    return n / (time.perf_counter() - started)


def search(seed: int) -> tuple[list[float], list[float]]:
    """The values ``optimize`` found trial by trial, and those of the grid of the same budget."""
    q = kn.Queue()

    @q.job(name=f"bench_bowl_{seed}")
    def trial(x: float, y: float, z: float) -> float:
        return bowl(x, y, z, seed)

    q.start(concurrency=4)
    try:
        space = {name: kn.uniform(*BOX) for name in ("x", "y", "z")}
        study = trial.optimize(space, metric="loss", n_trials=BUDGET, parallel=4,
                               sampler=optuna.samplers.TPESampler(seed=seed))
        study.wait(timeout=600)
        values = study.results().sort_values("trial")["objective"].tolist()
    finally:
        q.stop()
        q.close()
    axis = np.linspace(*BOX, round(BUDGET ** (1 / 3)))
    return values, [bowl(x, y, z, seed) for x, y, z in itertools.product(axis, axis, axis)]


def reached(values: list[float], bar: float) -> str:
    """The trials taken to go below ``bar``."""
    return next((str(i + 1) for i, v in enumerate(values) if v is not None and v < bar), f"not in {BUDGET}")


PROFILED = ("Study._drive", "Study.ask", "woken_within", "Study._look", "Study._tell", "Queue.prepare_call",
            "QueueManager.store", "MemoryDriver.get_many", "RedisDriver.get_many")


def profile(driver: str, n: int) -> None:
    """Where ``optimize``'s loop spends its wall-clock time (yappi, ``pip install yappi``)."""
    import yappi

    yappi.clear_stats()
    yappi.set_clock_type("wall")
    yappi.start()
    rate = through_queue(driver, n, f"profile{os.getpid()}")
    yappi.stop()
    stats = {f.name: f for f in yappi.get_func_stats() if f.name in PROFILED}
    print(f"{driver}: {rate:.1f} trials/s under the profiler, {n} trials\n")
    print("| function | calls | seconds |\n|---|---:|---:|")
    for name in PROFILED:
        if name in stats:
            print(f"| {name} | {stats[name].ncall} | {stats[name].ttot:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--drivers", default="memory,redis")
    parser.add_argument("--objectives", default="sync,async", help="no-op objectives to measure: sync, async")
    parser.add_argument("--profile", action="store_true", help="profile one run a driver instead")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.profile:
        for driver in args.drivers.split(","):
            profile(driver, args.n)
        return
    rows: list[str] = []
    for driver, objective in itertools.product(args.drivers.split(","), args.objectives.split(",")):
        queue_rates: list[float] = []
        alone_rates: list[float] = []
        for round_ in range(args.rounds):
            order: list[Any] = ["queue", "alone"] if round_ % 2 == 0 else ["alone", "queue"]
            for side in order:
                if side == "queue":
                    tag = f"{driver}{objective}{round_}{os.getpid()}"
                    queue_rates.append(through_queue(driver, args.n, tag, objective))
                else:
                    alone_rates.append(optuna_alone(args.n))
            print(f"round {round_ + 1} {driver} {objective}: queue {queue_rates[-1]:.1f}, "
                  f"alone {alone_rates[-1]:.1f} trials/s", file=sys.stderr)
        ratios = [a / b for a, b in zip(queue_rates, alone_rates, strict=True)]
        queued, alone = statistics.median(queue_rates), statistics.median(alone_rates)
        rows.append(f"| {driver} | {objective} | {queued:.1f} | {alone:.1f} | "
                    f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |")
    print(f"1. no-op trials, N = {args.n}, TPE (seed 0), {args.rounds} rounds\n")
    print("| driver | objective | optimize, parallel 1 (trials/s) | Optuna alone (trials/s) "
          "| ratio (spread) |")
    print("|---|---|---:|---:|---:|")
    print("\n".join(rows))
    found = [search(seed) for seed in range(args.rounds)]
    print(f"\n2. the noisy bowl, budget {BUDGET} trials, bars {BARS[0]:.3f} (5 %) and {BARS[1]:.4f} (1 %)\n")
    print("| seed | TPE: trials to 5 % / to 1 % | grid: trials to 5 % / to 1 % | best value TPE / grid |")
    print("|---:|---:|---:|---:|")
    for seed, (tpe, grid) in enumerate(found):
        best = min(v for v in tpe if v is not None)
        print(f"| {seed} | {reached(tpe, BARS[0])} / {reached(tpe, BARS[1])} | "
              f"{reached(grid, BARS[0])} / {reached(grid, BARS[1])} | {best:.4f} / {min(grid):.4f} |")


if __name__ == "__main__":
    main()
