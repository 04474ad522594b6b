"""What building a sweep costs when its points share a large argument: 200 points of a job
function, each given the same 20,000-float list, built and stored on the in-memory queue
(``fn.map``, which encodes every point at once); the median of 3 rounds, in seconds.

    for tree in /tmp/before /tmp/after; do PYTHONPATH=$tree python bench/sweep_encoding.py; done
"""

from __future__ import annotations

import statistics
import time

import khadem_nb as kn


def main() -> None:
    q = kn.Queue()

    @q.job
    def fit(alpha: float, data: list[float], seed: int = 0) -> float:
        return alpha

    data = [float(i) for i in range(20_000)]
    times = []
    for _ in range(3):
        started = time.perf_counter()
        fit.map([{"alpha": a / 100, "data": data, "seed": s} for a in range(50) for s in range(4)])
        times.append(time.perf_counter() - started)
    q.close()
    print(f"{statistics.median(times):.3f} s for 200 points")


if __name__ == "__main__":
    main()
