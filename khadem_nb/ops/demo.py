"""What ``khadem-nb demo`` runs: a real parameter sweep through the notebook layer.

A grid of 300 ridge-regression fits (numpy, generated data) over regularisation strength,
sample size and seed, on the in-memory default queue (or any ``--queue-url``), run by
in-process workers. Two kinds of failure show what the queue does with them: a simulated
transient error on the first attempt of some points, retried with backoff until they succeed,
and an input the fit rejects (no regularisation with fewer samples than features), which fails
on every attempt and is kept as failed with its error. A progress bar shows the sweep; then a
table of mean test error per grid cell, the failed points and the per-job metrics are printed.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from ._terminal import ProgressBar

FEATURES = 8
ALPHAS = [0.0, 0.01, 0.1, 1.0, 10.0, 100.0]
SAMPLES = [5, 20, 50, 200, 1000]
SEEDS = list(range(10))
FLAKY_SEED = 3  # every point with this seed fails once with a transient error
MAX_ATTEMPTS = 3


def fit_ridge(alpha: float, n_samples: int, seed: int = 0) -> dict[str, float]:
    """Fit ridge regression on generated data; return test error and weight norm.

    Raises ``ValueError`` for an underdetermined fit (``alpha == 0`` with fewer samples than
    features), where the normal equations have no unique solution.
    """
    import numpy as np

    if alpha == 0 and n_samples < FEATURES:
        raise ValueError(f"underdetermined: {n_samples} samples for {FEATURES} features need alpha > 0")
    rng = np.random.default_rng(seed)
    true_w = rng.normal(size=FEATURES)
    x = rng.normal(size=(n_samples, FEATURES))
    y = x @ true_w + rng.normal(scale=1.0, size=n_samples)
    x_test = rng.normal(size=(500, FEATURES))
    w = np.linalg.solve(x.T @ x + alpha * np.eye(FEATURES), x.T @ y)
    time.sleep(0.01)  # stands in for a longer fit, so the progress bar has something to show
    return {"test_mse": float(np.mean((x_test @ w - x_test @ true_w) ** 2)),
            "w_norm": float(np.linalg.norm(w))}


def run_demo(queue_url: str | None = None, concurrency: int = 4, stream: TextIO | None = None) -> Any:
    """Run the sweep and print its results; returns the results DataFrame."""
    from ..notebook.functions import JobFunction
    from ..notebook.queue import Queue

    out = stream or sys.stdout
    q = Queue(queue_url) if queue_url else Queue()
    attempted: set[tuple[float, int, int]] = set()
    lock = threading.Lock()

    def flaky_fit(alpha: float, n_samples: int, seed: int) -> dict[str, float]:
        point = (alpha, n_samples, seed)
        with lock:
            first = point not in attempted
            attempted.add(point)
        if first and seed == FLAKY_SEED:
            raise ConnectionError("simulated transient failure (the retry will succeed)")
        return fit_ridge(alpha, n_samples, seed)

    fit = JobFunction(q, flaky_fit, name="khadem_nb.demo.fit_ridge", max_attempts=MAX_ATTEMPTS,
                      retry_delay=0.1)
    try:
        total = len(ALPHAS) * len(SAMPLES) * len(SEEDS)
        out.write(f"khadem-nb demo: {total} ridge fits on {q.settings.redacted_url()}, "
                  f"{concurrency} workers\n")
        group = fit.sweep(alpha=ALPHAS, n_samples=SAMPLES, seed=SEEDS, fresh=True)
        q.start(concurrency=concurrency)
        _show_progress(q, group)
        frame = group.results()
        _print_tables(out, frame, q.metrics())
        return frame
    finally:
        q.close()


def _show_progress(q: Any, group: Any) -> None:
    bar = ProgressBar(len(group), "sweep")
    while not _all_finished(counts := group.counts()):
        bar.update(counts["completed"] + counts["failed"], _summary(q, counts))
        time.sleep(0.05)
    bar.close(len(group), _summary(q, counts))


def _print_tables(out: TextIO, frame: Any, metrics: Any) -> None:
    import pandas as pd

    completed = frame[frame["status"] == "completed"]
    grid = completed.pivot_table(index="alpha", columns="n_samples", values="test_mse", aggfunc="mean")
    failed = frame[frame["status"] == "failed"].groupby(["alpha", "n_samples", "error"]).size()
    with pd.option_context("display.width", 120, "display.max_columns", 20,
                           "display.float_format", "{:.4g}".format, "display.max_colwidth", 80):
        out.write("\nmean test error by alpha (rows) and n_samples (columns), over "
                  f"{len(SEEDS)} seeds\n{grid.to_string()}\n")
        out.write(f"\nfailed points (kept with their error after {MAX_ATTEMPTS} attempts)\n"
                  f"{failed.rename('points').reset_index().to_string(index=False)}\n")
        columns = ["completed", "failed", "retried", "success_rate", "duration_mean_ms", "duration_p95_ms"]
        out.write("\nmetrics\n" + metrics[columns].to_string() + "\n")


def _all_finished(counts: dict[str, int]) -> bool:
    return counts["queued"] + counts["scheduled"] + counts["active"] == 0


def _summary(q: Any, counts: dict[str, int]) -> str:
    return f"failed {counts['failed']}, retried {int(q.manager.get_metrics()['total_retried'])}"
