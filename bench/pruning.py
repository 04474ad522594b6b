"""What pruning saves: a grid of 64 synthetic training runs, with and without ``MedianPruner``.

Each point has a deterministic loss curve (``curve``): half converge to a floor of their own,
a quarter plateau high, a quarter diverge after a few steps. A step costs STEP_S of sleep and
reports its loss. The grid runs on a notebook queue with 16 in-kernel workers, once without
pruning and once with ``MedianPruner("loss", warmup_steps=5, min_points=4)``; step-seconds are
the steps every point ran (its last reported step + 1) times STEP_S. Reports whether the best
point of the full grid survives pruning. Medians of the rounds.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 BENCH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \\
    python bench/pruning.py [--rounds 3] [--drivers memory,sqlite,redis] [--step 0.1]

(``file`` and ``postgres`` are taken too.)
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time

from regression import drop_schema, queue_url

import khadem_nb as kn

POINTS = 64
STEPS = 30
STEP_S = 0.1  # a step (--step); a watched point stores its reports every 0.2 s
CONCURRENCY = 16


def curve(point: int, step: int) -> float:
    """The loss of ``point`` at ``step``: point % 4 of 0, 1 converge (floors spread by the
    point), 2 plateaus high, 3 diverges after step 4."""
    kind, floor = point % 4, 0.05 + 0.01 * point
    if kind in (0, 1):
        return floor + (1 - floor) * math.exp(-step / 6)
    if kind == 2:
        return 0.8 + 0.2 * math.exp(-step / 3)
    return 0.5 + 0.1 * max(0, step - 4) ** 1.5


def run_grid(url: str, prune: bool, step_s: float) -> tuple[float, int, float]:
    """Step-seconds spent, the best point's index, and the wall time."""
    q = kn.Queue(url)

    @q.job(name=f"bench_train_{os.getpid()}")
    def train(point: int) -> float:
        loss = math.inf
        for step in range(STEPS):
            loss = curve(point, step)
            kn.report(step, loss=loss)
            time.sleep(step_s)
        return loss

    q.start(concurrency=CONCURRENCY)
    started = time.perf_counter()
    try:
        pruner = kn.MedianPruner("loss", warmup_steps=5, min_points=4) if prune else None
        group = train.sweep(point=list(range(POINTS)), prune=pruner, fresh=True)
        group.wait(timeout=600)
        wall = time.perf_counter() - started
        results = group.results()
        curves = group.curves()
    finally:
        q.stop()
        q.run(q.manager.driver.purge())
        q.close()
    steps = curves.groupby("id")["step"].max() + 1
    completed = results[results["status"] == "completed"]
    best = int(completed.loc[completed["loss"].idxmin(), "point"])
    return float(steps.sum()) * step_s, best, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--drivers", default="memory,sqlite,redis")
    parser.add_argument("--step", type=float, default=STEP_S, help="seconds a step costs")
    args = parser.parse_args()
    full_best = min(range(POINTS), key=lambda p: curve(p, STEPS - 1))
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        for driver in args.drivers.split(","):
            spent: dict[bool, list[float]] = {False: [], True: []}
            kept: list[bool] = []
            walls: dict[bool, list[float]] = {False: [], True: []}
            for round_ in range(args.rounds):
                for prune in (False, True) if round_ % 2 == 0 else (True, False):
                    url = queue_url(driver, folder, f"prune{os.getpid()}r{round_}p{int(prune)}")
                    try:
                        seconds, best, wall = run_grid(url, prune, args.step)
                    finally:
                        drop_schema(url)
                    spent[prune].append(seconds)
                    walls[prune].append(wall)
                    if prune:
                        kept.append(best == full_best)
                    print(f"round {round_ + 1} {driver} prune={prune}: {seconds:.1f} step-s, best {best}, "
                          f"{wall:.1f} s", file=sys.stderr)
            full, pruned = statistics.median(spent[False]), statistics.median(spent[True])
            rows.append(f"| {driver} | {full:.1f} | {pruned:.1f} | {1 - pruned / full:.0%} | "
                        f"{statistics.median(walls[False]):.1f} / {statistics.median(walls[True]):.1f} | "
                        f"{sum(kept)} of {len(kept)} |")
    print(f"{POINTS} points x {STEPS} steps of {args.step * 1000:.0f} ms, {CONCURRENCY} workers, "
          f"{args.rounds} rounds\n")
    print("| driver | step-seconds, no pruning | with MedianPruner | saved | wall s (no / with) "
          "| best kept |")
    print("|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
