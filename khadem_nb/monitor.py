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

    def job_queued(self, record: JobRecord) -> None:
        """A job was stored."""
        ...
    def job_started(self, record: JobRecord) -> None:
        """A worker began an attempt of a job."""
        ...
    def job_completed(self, record: JobRecord, duration_ms: float) -> None:
        """An attempt completed the job, after ``duration_ms``."""
        ...
    def job_failed(self, record: JobRecord, duration_ms: float) -> None:
        """An attempt failed the job for good, after ``duration_ms``."""
        ...
    def job_retried(self, record: JobRecord, duration_ms: float) -> None:
        """An attempt failed and the job will run again, after ``duration_ms``."""
        ...
    def get_metrics(self) -> dict[str, Any]:
        """The nine counts and averages of ``metrics.summarize``."""
        ...
    def reset(self) -> None:
        """Start counting from zero."""
        ...


class BasicQueueMonitor:
    """Counts events in this process.

    ``average_processing_time_ms`` averages finished attempts, retried ones included. A retried
    attempt is not a failure: ``total_failed`` counts jobs that ended failed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Set every count to zero."""
        with self._lock:
            self.queued = self.started = self.completed = self.failed = self.retried = 0
            self._time_ms = 0.0  # summed over finished attempts: completed + failed + retried

    def job_queued(self, record: JobRecord) -> None:
        """Count a stored job."""
        self.queued += 1

    def job_started(self, record: JobRecord) -> None:
        """Count a started attempt."""
        self.started += 1

    def job_completed(self, record: JobRecord, duration_ms: float) -> None:
        """Count a completed job and its time."""
        self.completed += 1
        self._time_ms += duration_ms

    def job_failed(self, record: JobRecord, duration_ms: float) -> None:
        """Count a failed job and its time."""
        self.failed += 1
        self._time_ms += duration_ms

    def job_retried(self, record: JobRecord, duration_ms: float) -> None:
        """Count a retried attempt and its time."""
        self.retried += 1
        self._time_ms += duration_ms

    def get_metrics(self) -> dict[str, Any]:
        """The counts of this process, as ``metrics.summarize`` shapes them."""
        attempts = self.completed + self.failed + self.retried  # every started attempt ends as one
        return summarize(queued=self.queued, started=self.started, completed=self.completed,
                         failed=self.failed, retried=self.retried,
                         processing=max(0, self.started - attempts),  # 0 after a reset mid-run
                         time_ms=self._time_ms, timed=attempts)
