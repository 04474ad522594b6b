"""Metrics derived from a queue's stored records (any process, any driver)."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ._terminal import format_table, metrics_table
from .job import JobRecord, JobStatus
from .manager import QueueManager


def metrics_from_records(records: Sequence[JobRecord]) -> dict[str, Any]:
    """The nine metric keys, computed from stored records instead of one process's events.

    ``total_started`` counts attempts (a retried job started twice counts twice);
    ``total_retried`` counts attempts beyond the first of finished jobs.
    """
    completed = [r for r in records if r.status is JobStatus.COMPLETED]
    failed = [r for r in records if r.status is JobStatus.FAILED]
    finished = len(completed) + len(failed)
    durations = [d for r in completed + failed if (d := r.duration_ms) is not None]
    return {
        "total_queued": len(records),
        "total_started": sum(r.attempt for r in records),
        "total_completed": len(completed),
        "total_failed": len(failed),
        "total_retried": sum(max(0, r.attempt - 1) for r in completed + failed),
        "currently_processing": sum(r.status is JobStatus.ACTIVE for r in records),
        "success_rate": len(completed) / finished if finished else 0.0,
        "failure_rate": len(failed) / finished if finished else 0.0,
        "average_processing_time_ms": statistics.fmean(durations) if durations else 0.0,
    }


async def print_stats(url: str, queue: str | None = None, stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    manager = await QueueManager(url).init()
    try:
        counts = await manager.counts(queue)
        records = await manager.jobs(queue=queue)
    finally:
        await manager.close()
    out.write(f"queue {manager.settings.redacted_url()}\n\n")
    out.write(format_table([{"status": s, "jobs": n} for s, n in counts.items()]) + "\n\n")
    out.write(metrics_table(metrics_from_records(records)) + "\n")
