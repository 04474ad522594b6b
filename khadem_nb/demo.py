"""What ``khadem-nb demo`` runs: a real parameter sweep through the notebook layer.

A grid of ridge-regression fits (numpy, generated data) over regularisation strength and
sample size, on the SQLite driver in a temporary folder (or any ``--queue-url``), run by
in-process workers. One point fails on its first attempt (a simulated transient error) and
is retried with backoff. A progress bar shows the sweep; then the results DataFrame and the
per-job metrics are printed as tables.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from typing import Any, TextIO

from ._terminal import ProgressBar

ALPHAS = [0.0, 0.1, 1.0, 10.0, 100.0]
SAMPLES = [20, 50, 200, 1000]
FLAKY_POINT = (1.0, 200)


def fit_ridge(alpha: float, n_samples: int, seed: int = 0) -> dict[str, float]:
    """Fit ridge regression on generated data; return test error and weight norm."""
    import numpy as np

    rng = np.random.default_rng(seed)
    true_w = rng.normal(size=8)
    x = rng.normal(size=(n_samples, 8))
    y = x @ true_w + rng.normal(scale=1.0, size=n_samples)
    x_test = rng.normal(size=(500, 8))
    w = np.linalg.solve(x.T @ x + alpha * np.eye(8), x.T @ y)
    time.sleep(0.02)  # so the progress bar has something to show
    return {"test_mse": float(np.mean((x_test @ w - x_test @ true_w) ** 2)),
            "w_norm": float(np.linalg.norm(w))}


def run_demo(queue_url: str | None = None, concurrency: int = 4, stream: TextIO | None = None) -> Any:
    """Run the sweep and print its results; returns the results DataFrame."""
    import pandas as pd

    from .notebook.functions import JobFunction
    from .notebook.queue import Queue

    out = stream or sys.stdout
    folder = tempfile.TemporaryDirectory(prefix="khadem-demo-") if queue_url is None else None
    url = queue_url or f"sqlite:///{folder.name}/demo.db"  # type: ignore[union-attr]
    q = Queue(url)
    failed_once: set[tuple[float, int]] = set()
    lock = threading.Lock()

    def flaky_fit(alpha: float, n_samples: int) -> dict[str, float]:
        with lock:
            first = (alpha, n_samples) == FLAKY_POINT and (alpha, n_samples) not in failed_once
            failed_once.add((alpha, n_samples))
        if first:
            raise ConnectionError("simulated transient failure (the retry will succeed)")
        return fit_ridge(alpha, n_samples)

    fit = JobFunction(q, flaky_fit, name="khadem_nb.demo.fit_ridge", max_attempts=3, retry_delay=0.2)

    try:
        out.write(f"khadem-nb demo: {len(ALPHAS) * len(SAMPLES)} ridge fits on {q.settings.redacted_url()}\n")
        group = fit.sweep(alpha=ALPHAS, n_samples=SAMPLES, fresh=True)
        q.start(concurrency=concurrency)
        bar = ProgressBar(len(group), "sweep")
        while not _all_finished(counts := group.counts()):
            bar.update(counts["completed"] + counts["failed"], f"retried {_retried(q)}")
            time.sleep(0.05)
        bar.close(len(group), f"retried {_retried(q)}")
        frame = group.results()
        with pd.option_context("display.width", 120, "display.max_columns", 20):
            out.write("\nresults\n" + frame.drop(columns=["error"]).to_string(index=False) + "\n")
            metrics = q.metrics()[["completed", "failed", "retried", "success_rate", "duration_mean_ms",
                                   "duration_p95_ms"]]
            out.write("\nmetrics\n" + metrics.to_string() + "\n")
        return frame
    finally:
        q.close()
        if folder is not None:
            folder.cleanup()


def _all_finished(counts: dict[str, int]) -> bool:
    return counts["queued"] + counts["scheduled"] + counts["active"] == 0


def _retried(q: Any) -> int:
    return int(q.manager.get_metrics()["total_retried"])
