"""Metrics: the ``QueueMonitor`` protocol and the counting ``BasicQueueMonitor``.

The executor calls the monitor once per event, for every driver, so each count has exactly
one source.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol, runtime_checkable

from .job import JobRecord
from .metrics import summarize


@runtime_checkable
class QueueMonitor(Protocol):
    """Receives job events; ``get_metrics`` returns the nine keys (see ``metrics.summarize``)."""

    def job_queued(self, record: JobRecord) -> None: ...
    def job_started(self, record: JobRecord) -> None: ...
    def job_completed(self, record: JobRecord, duration_ms: float) -> None: ...
    def job_failed(self, record: JobRecord, duration_ms: float) -> None: ...
    def job_retried(self, record: JobRecord, duration_ms: float) -> None: ...
    def get_metrics(self) -> dict[str, Any]: ...
    def reset(self) -> None: ...


class BasicQueueMonitor:
    """Counts events in this process.

    ``average_processing_time_ms`` averages finished attempts, retried ones included. A retried
    attempt is not a failure: ``total_failed`` counts jobs that ended failed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.queued = self.started = self.completed = self.failed = self.retried = 0
            self._time_ms = 0.0  # summed over finished attempts: completed + failed + retried

    def job_queued(self, record: JobRecord) -> None:
        self.queued += 1

    def job_started(self, record: JobRecord) -> None:
        self.started += 1

    def job_completed(self, record: JobRecord, duration_ms: float) -> None:
        self.completed += 1
        self._time_ms += duration_ms

    def job_failed(self, record: JobRecord, duration_ms: float) -> None:
        self.failed += 1
        self._time_ms += duration_ms

    def job_retried(self, record: JobRecord, duration_ms: float) -> None:
        self.retried += 1
        self._time_ms += duration_ms

    def get_metrics(self) -> dict[str, Any]:
        attempts = self.completed + self.failed + self.retried  # every started attempt ends as one
        return summarize(queued=self.queued, started=self.started, completed=self.completed,
                         failed=self.failed, retried=self.retried,
                         processing=max(0, self.started - attempts),  # 0 after a reset mid-run
                         time_ms=self._time_ms, timed=attempts)
