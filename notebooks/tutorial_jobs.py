"""Jobs for the scaling-out tutorial: defined in a module, so worker processes can import them.

``khadem-nb worker --import tutorial_jobs`` imports this file, which registers ``simulate``.
Creating the ``Queue`` here does not connect to anything: that happens on first use.
"""

from __future__ import annotations

import os
import random
import time

import khadem_nb as kn

q = kn.Queue(os.environ.get("KHADEM_QUEUE_URL", "sqlite:///tutorial-scale.db"))


@q.job(max_attempts=2, retry_delay=0.2)
def simulate(seed: int, steps: int = 20_000) -> dict[str, float]:
    """A small Monte Carlo estimate of pi; reports progress and which process ran it."""
    rng = random.Random(seed)
    inside = 0
    for step in range(1, steps + 1):
        x, y = rng.random(), rng.random()
        inside += x * x + y * y <= 1.0
        if step % 5_000 == 0:
            kn.progress(step / steps, note=f"{step} samples")
    time.sleep(0.2)  # stand-in for real work, so several workers visibly share the batch
    return {"pi": 4 * inside / steps, "pid": os.getpid()}
