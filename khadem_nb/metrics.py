"""The nine metrics, computed one way for every reader.

``BasicQueueMonitor`` counts the events of one process; ``metrics_from_records`` derives the
same keys from stored records (any process, any driver) for ``khadem-nb stats`` and the
notebook's ``q.metrics()``; ``metrics_from_counts`` from counts by status, for the panel. All
end in :func:`summarize`, so a rate or an average means the same everywhere: rates are
fractions of finished jobs in ``[0, 1]`` and ``0.0`` while nothing has finished; the average is
over finished attempts and ``0.0`` while none was timed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

from .job import ACTIVE, COMPLETED, FAILED, JobRecord


def summarize(*, queued: int, started: int, completed: int, failed: int, retried: int,
              processing: int, time_ms: float, timed: int) -> dict[str, Any]:
    """The nine metric keys from counts; ``time_ms`` is summed over ``timed`` attempts."""
    finished = completed + failed
    return {
        "total_queued": queued,
        "total_started": started,
        "total_completed": completed,
        "total_failed": failed,
        "total_retried": retried,
        "currently_processing": processing,
        "success_rate": completed / finished if finished else 0.0,
        "failure_rate": failed / finished if finished else 0.0,
        "average_processing_time_ms": time_ms / timed if timed else 0.0,
    }


def metrics_from_records(records: Sequence[JobRecord]) -> dict[str, Any]:
    """The nine keys from stored records instead of one process's events.

    ``total_started`` counts attempts (a retried job started twice counts twice);
    ``total_retried`` counts attempts beyond the first of finished jobs; the average is over
    the last attempt of each finished job (earlier attempts leave no duration in the record).
    """
    completed = failed = retried = processing = 0
    durations: list[float] = []
    for record in records:
        status = record.status
        if status is COMPLETED or status is FAILED:
            completed += status is COMPLETED
            failed += status is FAILED
            retried += max(0, record.attempt - 1)
            if (duration := record.duration_ms) is not None:
                durations.append(duration)
        elif status is ACTIVE:
            processing += 1
    return summarize(queued=len(records), started=sum(r.attempt for r in records), completed=completed,
                     failed=failed, retried=retried, processing=processing, time_ms=sum(durations),
                     timed=len(durations))


def metrics_from_counts(counts: dict[str, int]) -> dict[str, Any]:
    """The nine keys as far as counts by status tell them (the panel's view, read several times
    a second): attempts and durations are not in counts, so those keys are 0."""
    return summarize(queued=sum(counts.values()), started=0, completed=counts.get("completed", 0),
                     failed=counts.get("failed", 0), retried=0, processing=counts.get("active", 0),
                     time_ms=0.0, timed=0)


# -- series for charts: the panel's and the dashboard's -------------------------------------------

def rate_series(samples: Sequence[tuple[float, int]], now: float, bucket_s: float,
                buckets: int) -> list[float]:
    """Jobs per second in each of ``buckets`` windows of ``bucket_s`` ending at ``now``, oldest
    first, from ``(time, finished count)`` samples in time order. A count that drops (retention
    trimmed records) starts afresh from its new value instead of counting negative work."""
    totals = [0.0] * buckets
    start = now - bucket_s * buckets
    for (_, c0), (t1, c1) in itertools.pairwise(samples):
        if t1 <= start or c1 <= c0:
            continue
        index = min(buckets - 1, int((t1 - start) // bucket_s))
        totals[index] += c1 - c0
    return [total / bucket_s for total in totals]


def duration_bins(durations_s: Sequence[float], bins: int = 8) -> list[tuple[float, float, int]]:
    """A histogram of durations: ``bins`` equal bins from 0 to the longest, as (low, high, count)."""
    if not durations_s:
        return []
    width = max(durations_s) / bins or 1e-3
    counts = [0] * bins
    for duration in durations_s:
        counts[min(bins - 1, int(duration / width))] += 1
    return [(i * width, (i + 1) * width, n) for i, n in enumerate(counts)]


def timeline_rows(recent: Iterable[tuple[str, JobRecord]], now_ms: int,
                  span_ms: int) -> list[tuple[str, str, int, int, str]]:
    """Jobs that ran within ``span_ms`` before ``now_ms``, as (worker, job name, start, end,
    status) with times in ms before ``now_ms``, by worker then start."""
    rows = []
    for worker, record in recent:
        started, ended = record.started_ms, record.finished_ms or now_ms
        if started is None or ended < now_ms - span_ms:
            continue
        rows.append((worker, record.name, now_ms - started, now_ms - ended, record.status.value))
    return sorted(rows, key=lambda row: (row[0], -row[2]))
