"""Helpers shared by the durable drivers: reclaim decisions and fenced record updates."""

from __future__ import annotations

from ..job import JobRecord, JobStatus
from .base import LEASE_LOST_ERROR


def reclaim(record: JobRecord, now: int, max_reclaims: int) -> JobRecord:
    """A record whose lease expired: back to the queue, or failed after too many reclaims."""
    record.token = None
    record.lease_ms = None
    if record.reclaims >= max_reclaims:
        record.status = JobStatus.FAILED
        record.finished_ms = now
        record.error = LEASE_LOST_ERROR.format(n=record.reclaims + 1)
        record.traceback = None
    else:
        record.reclaims += 1
        record.status = JobStatus.QUEUED
        record.available_ms = now
        record.started_ms = None
    return record
