"""Does an open panel drawing curves slow a reporting sweep down?

A 200-point sweep on the in-memory queue, 16 in-kernel workers, each point 20 steps of 50 ms
that each report two metrics (``kn.report``), run with no panel and with ``q.panel(refresh=0.5)``
open (its refresher reads the running and last finished jobs and draws the first metric's
curves each half second). The rate is points a second over the span from the first start to
the last end, read from the records; the two alternate round by round; medians.

    python bench/panel_curves.py [--rounds 3] [--points 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import khadem_nb as kn

STEPS = 20
STEP_S = 0.05


def run(points: int, with_panel: bool, tag: str) -> tuple[float, int]:
    """Points a second, and how many times the panel refreshed (0 without one)."""
    q = kn.Queue()

    @q.job(name=f"bench_panel_train_{tag}")
    def train(point: int) -> float:
        loss = 1.0
        for step in range(STEPS):
            loss = (point % 7 + 1) / (step + 1)
            kn.report(step, loss=loss, acc=1 - loss / 8)
            time.sleep(STEP_S)
        return loss

    panel = q.panel(refresh=0.5) if with_panel else None
    q.start(concurrency=16)
    try:
        group = train.map([{"point": i} for i in range(points)])
        group.wait(timeout=600)
        records = group.records()
    finally:
        q.stop()
        updates = 0 if panel is None else panel.updates
        if panel is not None:
            panel.close()
        q.close()
    first = min(r.started_ms for r in records if r.started_ms is not None)
    last = max(r.finished_ms for r in records if r.finished_ms is not None)
    return points / ((last - first) / 1000), updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--points", type=int, default=200)
    args = parser.parse_args()
    rates: dict[bool, list[float]] = {False: [], True: []}
    refreshes = []
    for round_ in range(args.rounds):
        for with_panel in (False, True) if round_ % 2 == 0 else (True, False):
            rate, updates = run(args.points, with_panel, f"{round_}{int(with_panel)}{os.getpid()}")
            rates[with_panel].append(rate)
            if with_panel:
                refreshes.append(updates)
            print(f"round {round_ + 1} panel={with_panel}: {rate:.2f} points/s", flush=True)
    ratios = [b / a for a, b in zip(rates[False], rates[True], strict=True)]
    print(f"\n{args.points} points x {STEPS} reported steps of {STEP_S * 1000:.0f} ms, 16 workers, "
          f"{args.rounds} rounds\n")
    print("| no panel (points/s) | panel open (points/s) | ratio (spread) | panel redraws a run |")
    print("|---:|---:|---:|---:|")
    print(f"| {statistics.median(rates[False]):.2f} | {statistics.median(rates[True]):.2f} | "
          f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) | "
          f"{statistics.median(refreshes):.0f} |")


if __name__ == "__main__":
    main()
